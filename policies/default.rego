# AgentGate default policy.
#
# Input: the AuthZEN tuple {subject, action, resource, context} built by the intent gate.
# Output: data.agentgate.decision = {"effect": "allow"|"escalate"|"deny", "reasons": [...],
#                                    "consent"?: {"binding_message": ...}}
#
# At a glance:
#   deny      destructive operations (the named pattern sets below), every `delete`-class
#             operation, unknown operations, unknown hosts, GitHub writes outside
#             settings.github_orgs, bulk e-mail (> settings.max_recipients recipients),
#             GraphQL documents too large or too long to inspect
#   escalate  every other write: a person approves it first
#   allow     catalog reads
#   deny      anything else (fail closed)
# Deny beats escalate beats allow: one rule per effect collects its reasons, and `decision`
# picks the strongest effect that has at least one reason.
#
# Patterns read like glob.match patterns with "." as the delimiter: `*` stands for part of
# one dotted segment, a final `.**` for any number of segments (see `matches`). Action names are
#   github.<operationId, "/" -> ".">       e.g. github.repos.create-webhook
#   github.graphql.<optype>.<field>        e.g. github.graphql.mutation.deleteRef
#   gmail.<discovery method id minus "gmail.">  e.g. gmail.users.messages.send
#   slack.<Web API method>                 e.g. slack.admin.users.remove
# Destructive patterns only apply to operations that are not reads.
package agentgate

import rego.v1

# ---------------------------------------------------------------------------------------
# Destructive operations, denied even when their class is "write".

destructive := [
	{
		"id": "permissions",
		"why": "changing who has access (collaborators, teams, org membership and roles, Actions and Copilot permissions, app scopes)",
		"patterns": [
			"github.repos.*collaborator*",
			"github.repos.*invitation*",
			"github.repos.*access-restrictions",
			"github.teams.*member*",
			"github.teams.*repo-permissions*",
			"github.teams.remove-repo*",
			"github.orgs.*member*",
			"github.orgs.*role*",
			"github.orgs.*invitation*",
			"github.orgs.*outside-collaborator*",
			"github.orgs.*security-manager*",
			"github.orgs.*pat-*",
			"github.actions.*permissions*",
			"github.actions.set-allowed-actions-*",
			"github.actions.set-workflow-access-*",
			"github.codespaces.*codespaces-access*",
			"github.dependabot.*repository-access*",
			"github.copilot-spaces.*collaborator*",
			"github.copilot.*",
			"github.graphql.mutation.updateTeamsRepository",
			"github.graphql.mutation.updateProjectV2Collaborators",
			"github.graphql.mutation.*OutsideCollaborator",
			"github.graphql.mutation.*MigratorRole",
			"slack.canvases.access.*",
			"slack.slackLists.access.*",
			"slack.apps.manifest.*",
		],
	},
	{
		"id": "secrets",
		"why": "changing secrets, variables and credentials (Actions, Dependabot, Codespaces and agent secrets, OIDC, runner and app tokens, fork access to secrets)",
		"patterns": [
			"github.*.*secret*",
			"github.*.*variable*",
			"github.actions.set-custom-oidc-sub-claim-*",
			"github.actions.create-registration-token-*",
			"github.actions.create-remove-token-*",
			"github.actions.generate-runner-jitconfig-*",
			"github.actions.set-private-repo-fork-pr-workflows-settings-*",
			"github.oidc.*",
			"github.private-registries.*",
			"github.apps.*",
			"github.credentials.*",
			"gmail.users.settings.cse.**",
			"slack.oauth.**",
			"slack.openid.**",
			"slack.tooling.tokens.*",
		],
	},
	{
		"id": "webhooks",
		"why": "creating or changing webhooks, which send repository events to an outside URL",
		"patterns": ["github.*.*webhook*", "github.*.*hook-config*"],
	},
	{
		"id": "keys",
		"why": "adding or changing deploy keys, SSH or GPG keys and account e-mail addresses",
		"patterns": [
			"github.repos.*deploy-key*",
			"github.users.*ssh*",
			"github.users.*gpg*",
			"github.users.*email*",
		],
	},
	{
		"id": "branch-protection",
		"why": "changing branch protection, rulesets, deployment protection and immutable releases",
		"patterns": [
			"github.repos.*protection*",
			"github.repos.*status-check-contexts",
			"github.repos.*ruleset*",
			"github.repos.*deployment-branch-policy*",
			"github.repos.*deployment-protection-rule*",
			"github.repos.*immutable-releases*",
			"github.orgs.*immutable-releases*",
			"github.graphql.mutation.*BranchProtectionRule",
			"github.graphql.mutation.*RepositoryRuleset",
		],
	},
	{
		"id": "security-controls",
		"why": "changing security features (vulnerability alerts, security fixes, push protection, code security configurations)",
		"patterns": [
			"github.repos.disable-*",
			"github.secret-scanning.create-push-protection-bypass",
			"github.secret-scanning.update-org-pattern-configs",
			"github.orgs.enable-or-disable-security-product-*",
			"github.code-security.*",
			"github.graphql.mutation.dismissRepositoryVulnerabilityAlert",
		],
	},
	{
		"id": "repository-transfer",
		"why": "transferring, archiving or migrating repositories out of their owner",
		"patterns": [
			"github.repos.transfer",
			"github.migrations.*",
			"github.graphql.mutation.archiveRepository",
			"github.graphql.mutation.*Migration*",
			"github.graphql.mutation.createMigrationSource",
			"github.graphql.mutation.transfer*Organization",
		],
	},
	{
		"id": "org-admin",
		"why": "administering organizations and enterprises (settings, billing, networking, enterprise APIs)",
		"patterns": [
			"github.enterprise-admin.*",
			"github.enterprise-*.*",
			"github.*.*enterprise*",
			"github.orgs.update",
			"github.billing.*",
			"github.hosted-compute.*",
			"github.graphql.mutation.*Enterprise*",
			"github.graphql.mutation.*IpAllowList*",
			"github.graphql.mutation.*VerifiableDomain*",
			"github.graphql.mutation.updateOrganization*Setting",
		],
	},
	{
		"id": "slack-admin",
		"why": "Slack workspace administration (admin.* methods)",
		"patterns": ["slack.admin.**"],
	},
	{
		"id": "slack-external-sharing",
		"why": "sharing Slack content outside the workspace (public file links, Slack Connect invitations)",
		"patterns": [
			"slack.files.sharedPublicURL",
			"slack.conversations.*Shared*",
			"slack.conversations.requestSharedInvite.*",
			"slack.conversations.externalInvitePermissions.*",
		],
	},
	{
		"id": "gmail-exfiltration",
		"why": "changing mail forwarding, delegation, filters, send-as addresses or POP/IMAP access (mail exfiltration)",
		"patterns": [
			"gmail.users.settings.forwardingAddresses.*",
			"gmail.users.settings.updateAutoForwarding",
			"gmail.users.settings.delegates.*",
			"gmail.users.settings.filters.*",
			"gmail.users.settings.sendAs.**",
			"gmail.users.settings.updateImap",
			"gmail.users.settings.updatePop",
		],
	},
	{
		"id": "gmail-deletion",
		"why": "deleting or trashing mail",
		"patterns": [
			"gmail.users.messages.delete",
			"gmail.users.messages.batchDelete",
			"gmail.users.messages.trash",
			"gmail.users.threads.delete",
			"gmail.users.threads.trash",
		],
	},
	{
		"id": "deletion",
		"why": "deleting, removing or revoking",
		"patterns": [
			"github.*.delete*",
			"github.*.remove*",
			"github.*.revoke*",
			"github.graphql.mutation.delete*",
			"github.graphql.mutation.remove*",
			"github.graphql.mutation.revoke*",
			"slack.*.delete*",
			"slack.*.*.delete*",
			"slack.*.remove*",
			"slack.*.*.remove*",
			"slack.*.revoke",
			"slack.*.uninstall",
		],
	},
]

# ---------------------------------------------------------------------------------------
# The request.

action_name := input.action.name

action_class := input.action.properties.class

default settings := {}

settings := data.settings

agent_name := name if {
	name := input.subject.properties.name
	is_string(name)
	name != ""
} else := last if {
	parts := split(input.subject.id, "/")
	last := parts[count(parts) - 1]
} else := "agent"

# Every operation the request performs: the action itself and, for GitHub GraphQL, each
# top-level field of the document (a document can hide a destructive mutation behind a
# harmless one of the same class).
operations contains {"name": action_name, "class": action_class}

operations contains {"name": sprintf("github.graphql.%s.%s", [f.operation, f.field]), "class": f.class} if {
	some f in input.context.body.graphql.fields
}

# Pattern matching (like glob.match(pattern, ["."], name), without compiling a glob per call):
# "." separates segments; "*" matches within one segment (at most two per segment); a final
# ".**" matches any number of further segments. The first lines reject most patterns cheaply.
matches(pattern, name) if {
	parts := split(pattern, "*")
	startswith(name, parts[0])
	every part in parts {
		contains(name, part)
	}
	exact_match(pattern, name)
}

exact_match(pattern, name) if endswith(pattern, ".**")

exact_match(pattern, name) if {
	not endswith(pattern, ".**")
	ps := split(pattern, ".")
	ns := split(name, ".")
	count(ps) == count(ns)
	every i, p in ps {
		segment_matches(p, ns[i])
	}
}

segment_matches(p, s) if p == s

segment_matches(p, s) if {
	parts := split(p, "*")
	count(parts) == 2
	startswith(s, parts[0])
	endswith(s, parts[1])
	count(s) >= count(parts[0]) + count(parts[1])
}

segment_matches(p, s) if {
	parts := split(p, "*")
	count(parts) == 3
	startswith(s, parts[0])
	endswith(s, parts[2])
	middle := substring(s, count(parts[0]), (count(s) - count(parts[0])) - count(parts[2]))
	contains(middle, parts[1])
}

# ---------------------------------------------------------------------------------------
# deny

deny contains msg if {
	some op in operations
	op.class != "read"
	some rule in destructive
	some pattern in rule.patterns
	matches(pattern, op.name)
	msg := sprintf("%s is destructive: %s is denied by the default policy (rule %s)", [op.name, rule.why, rule.id])
}

deny contains msg if {
	some op in operations
	op.class == "delete"
	msg := sprintf("%s deletes data: delete operations are denied by the default policy (rule delete-class)", [op.name])
}

deny contains msg if {
	input.resource.type == "host"
	msg := sprintf("%s is not a known service: requests to unknown hosts are denied by the default policy (rule unknown-host)", [input.resource.id])
}

deny contains msg if {
	input.resource.type != "host"
	some op in operations
	op.class == "unknown"
	msg := sprintf("%s is not an operation in the service catalog: unknown operations are denied by the default policy (rule unknown-operation)", [op.name])
}

deny contains msg if {
	startswith(action_name, "github.graphql.")
	input.context.body_truncated == true
	msg := "the GraphQL document is larger than AgentGate inspects: denied by the default policy (rule graphql-uninspectable)"
}

deny contains msg if {
	input.context.body.graphql.list_truncated == true
	msg := "the GraphQL document has more top-level fields than AgentGate lists: denied by the default policy (rule graphql-uninspectable)"
}

deny contains msg if {
	limit := settings.max_recipients
	n := input.context.body.email.recipient_count
	n > limit
	msg := sprintf("%s to %d recipients is bulk mail: more than %d recipients is denied by the default policy (rule bulk-mail)", [action_name, n, limit])
}

deny contains msg if {
	orgs := object.get(settings, "github_orgs", [])
	count(orgs) > 0
	action_class != "read"
	owner := github_owner
	not lower(owner) in {lower(o) | some o in orgs}
	msg := sprintf("%s on %s: %s is not one of settings.github_orgs, and writes outside them are denied by the default policy (rule github-outside-orgs)", [action_name, input.resource.id, owner])
}

github_owner := input.resource.properties.owner if input.resource.type == "github.repo"

github_owner := input.resource.properties.org if input.resource.type == "github.org"

# ---------------------------------------------------------------------------------------
# escalate

escalate contains msg if {
	some op in operations
	op.class == "write"
	msg := sprintf("%s changes data: writes need a person's approval under the default policy (rule write-escalates)", [op.name])
}

escalate contains msg if {
	action_class == "write"
	external := {d | some d in input.context.body.email.domains; not internal_domain(d)}
	count(external) > 0
	msg := sprintf("%s mails domains outside settings.internal_domains: %s (rule write-escalates)", [action_name, concat(", ", sort(external))])
}

# A domain in settings.internal_domains, or a subdomain of one.
internal_domain(d) if lower(d) in {lower(i) | some i in object.get(settings, "internal_domains", [])}

internal_domain(d) if {
	some i in object.get(settings, "internal_domains", [])
	endswith(lower(d), concat("", [".", lower(i)]))
}

# ---------------------------------------------------------------------------------------
# allow

allow contains msg if {
	action_class == "read"
	msg := sprintf("%s is a catalog read: reads are allowed by the default policy (rule read-allowed)", [action_name])
}

# ---------------------------------------------------------------------------------------
# The decision: deny beats escalate beats allow; nothing matched is a deny.

decision := {"effect": "deny", "reasons": sort(deny)} if {
	count(deny) > 0
} else := {
	"effect": "escalate",
	"reasons": sort(escalate),
	"consent": {"binding_message": binding_message},
} if {
	count(escalate) > 0
} else := {"effect": "allow", "reasons": sort(allow)} if {
	count(allow) > 0
} else := {"effect": "deny", "reasons": [sprintf("%s (class %v) matches no rule of the default policy: denied (rule fail-closed)", [object.get(input, ["action", "name"], "the request"), object.get(input, ["action", "properties", "class"], "missing")])]}

# ---------------------------------------------------------------------------------------
# Consent text: "<agent>: <action> <resource>", at most 64 characters of letters, digits,
# space and +-_.,:# (what CIBA providers accept). "/" becomes ":", any other character "_".

binding_message := substring(safe_text(replace(sprintf("%s: %s %s", [agent_name, action_name, object.get(input, ["resource", "id"], "")]), "/", ":")), 0, 64)

binding_chars := "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 +-_.,:#"

# trim() removes every allowed character from both ends: "" means nothing else is there.
safe_text(s) := s if {
	trim(s, binding_chars) == ""
} else := concat("", [safe_char(substring(s, i, 1)) | some i in numbers.range(0, count(s) - 1)])

safe_char(c) := c if {
	contains(binding_chars, c)
} else := "_"
