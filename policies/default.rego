# AgentGate default policy.
#
# Input: the AuthZEN tuple {subject, action, resource, context} built by the intent gate.
# Output: data.agentgate.decision = {"effect": "allow"|"escalate"|"deny", "reasons": [...],
#                                    "consent"?: {"binding_message": ...}}
#
# At a glance:
#   deny      destructive operations (the rules below), every `delete`-class operation,
#             unknown operations, unknown hosts, MCP servers not configured, GitHub writes outside settings.github_orgs,
#             bulk e-mail (> settings.max_recipients recipients), GraphQL documents too large
#             or too long to inspect
#   escalate  every other write: a person approves it first; an MCP tool whose definition
#             changed since it was pinned (rule tool_definition_changed)
#   allow     catalog reads
#   deny      anything else (fail closed)
#   budgets   external mail and Slack posts to public channels are counted per agent
#             (settings.budgets); past the limit in the window they are denied

# Deny beats escalate beats allow: `deny` and `escalate` collect their rules' reasons, and
# `decision` picks the strongest effect that has at least one reason.
#
# Destructive operations, denied even when their class is "write" (never when a read):
#   permissions             who has access: collaborators, invitations, teams, org membership
#                           and roles, Actions and Copilot permissions, fine-grained token
#                           approvals, Slack app manifests, canvas and list access
#   secrets                 secrets and variables, OIDC, runner registration and app tokens,
#                           private registries, Gmail encryption keys, Slack token exchange
#   webhooks                creating, changing, pinging or redelivering webhooks
#   keys                    deploy keys, SSH and GPG keys, account e-mail addresses
#   branch-protection       branch protection, rulesets, deployment protection, immutable releases
#   security-controls       vulnerability alerts, security fixes, push-protection bypasses,
#                           code security configurations
#   repository-transfer     transferring, archiving and migrating repositories
#   org-admin               organization settings, enterprise APIs, billing, networking
#   slack-admin             Slack admin.*
#   slack-external-sharing  public file links, Slack Connect invitations and permissions
#   gmail-exfiltration      forwarding, filters, delegates, send-as, POP/IMAP settings
#   gmail-deletion          deleting or trashing mail
#   deletion                deleting, removing or revoking (by name, whatever the class)
# The rules' texts and the operations they name are data, settings.json "destructive":
#   rules          rule id -> the text of its reason
#   names          whole action names                    "github.repos.transfer"
#   under          prefixes: every action below one      "slack.admin", "gmail.users.settings.sendAs"
#   github_words   a word of a GitHub REST operation id  "secret": {"*": [...]} (any area),
#                  (github.<area>.<word>-<word>-...)     "member": {"orgs": [...], "teams": [...]}
#   github_verbs   the first word of one                 "delete": {"*": [...]}
#   slack_methods  the method of a 3- or 4-part Slack name  "delete" (slack.chat.delete, ...)
# GitHub GraphQL fields (github.graphql.<optype>.<field>) are listed whole in `names`.
# Without these tables every operation but a read is denied (rule destructive-tables).
#
# Action names:
#   github.<operationId, "/" -> ".">           e.g. github.repos.create-webhook
#   github.graphql.<optype>.<field>            e.g. github.graphql.mutation.deleteRef
#   github.git.fetch | github.git.push         git over HTTPS on github.com (read | write)
#   gmail.<discovery method id minus "gmail.">  e.g. gmail.users.messages.send
#   slack.<Web API method>                     e.g. slack.admin.users.remove
#   mcp.<server>.tools.call.<tool>             an MCP tool call, e.g. mcp.github.tools.call.create_issue
#                                              (class: read for get_/list_/search_… tools, delete
#                                              for delete_/remove_…, else write)
#   mcp.<server>.<method, "/" -> ".">          other MCP methods, e.g. mcp.github.tools.list (read)
#
# Cost: this runs for every request. In regorus a rule evaluated or a function called costs
# as much as a dozen lookups, and a table written in Rego is rebuilt on every evaluation;
# hence the tables are data (loaded once), `deny` and `escalate` are unions of set
# comprehensions (one per rule) rather than one rule body each, and there are few helpers.
package agentgate

import rego.v1

# ---------------------------------------------------------------------------------------
# The decision: deny beats escalate beats allow; nothing matched is a deny.

decision := {"effect": "deny", "reasons": sort(deny)} if {
	deny != set()
} else := {
	"effect": "escalate",
	"reasons": sort(escalate),
	"consent": {"binding_message": binding_message},
	"budgets": budgets,
} if {
	escalate != set()
} else := {"effect": "allow", "reasons": [reason], "budgets": budgets} if {
	# rule read-allowed: catalog reads
	input.action.properties.class == "read"
	reason := sprintf("%s is a catalog read: reads are allowed by the default policy (rule read-allowed)", [input.action.name])
} else := {"effect": "deny", "reasons": [sprintf("%s (class %v) matches no rule of the default policy: denied (rule fail-closed)", [object.get(input, ["action", "name"], "the request"), object.get(input, ["action", "properties", "class"], "missing")])]}

# ---------------------------------------------------------------------------------------
# deny

deny := (
	# The action, unless it is a read: destructive rules, delete-class, unknown-operation.
	{msg |
		input.action.properties.class != "read"
		some msg in operation_denials(input.action.name, input.action.properties.class, destructive_rules(input.action.name))
	}
	# GitHub GraphQL: each top-level field of the document, likewise (a document can hide a
	# destructive mutation behind a harmless one of the same class).
	| {msg |
		some f in input.context.body.graphql.fields
		f.class != "read"
		name := sprintf("github.graphql.%s.%s", [f.operation, f.field])
		some msg in operation_denials(name, f.class, object.get(data.destructive.names, name, []))
	}
	# rule mcp-unknown-server: MCP traffic to a server no [[mcp.servers]] entry names
	| {msg |
		input.context.mcp.server == "unknown"
		msg := sprintf("%s goes to an MCP server AgentGate is not configured for: list it under [[mcp.servers]]; unknown MCP servers are denied by the default policy (rule mcp-unknown-server)", [input.action.name])
	}
	# rule unknown-host
	| {msg |
		input.resource.type == "host"
		msg := sprintf("%s is not a known service: requests to unknown hosts are denied by the default policy (rule unknown-host)", [input.resource.id])
	}
	# rule graphql-uninspectable
	| {msg |
		input.context.body_truncated == true
		startswith(input.action.name, "github.graphql")
		msg := "the GraphQL document is larger than AgentGate inspects: denied by the default policy (rule graphql-uninspectable)"
	}
	| {msg |
		input.context.body.graphql.list_truncated == true
		msg := "the GraphQL document has more top-level fields than AgentGate lists: denied by the default policy (rule graphql-uninspectable)"
	}
	# rule bulk-mail
	| {msg |
		n := input.context.body.email.recipient_count
		limit := data.settings.max_recipients
		n > limit
		msg := sprintf("%s to %d recipients is bulk mail: more than %d recipients is denied by the default policy (rule bulk-mail)", [input.action.name, n, limit])
	}
	# rule github-outside-orgs
	| {msg |
		input.action.properties.class != "read"
		orgs := data.settings.github_orgs
		count(orgs) > 0
		owner := github_owner
		not lower(owner) in {lower(o) | some o in orgs}
		msg := sprintf("%s on %s: %s is not one of settings.github_orgs, and writes outside them are denied by the default policy (rule github-outside-orgs)", [input.action.name, input.resource.id, owner])
	}
)

# Why one operation (not a read) is denied: the destructive rules naming it, rule
# delete-class and rule unknown-operation.
operation_denials(name, class, rules) := (
	{msg |
		some id in rules
		msg := sprintf("%s is destructive: %s is denied by the default policy (rule %s)", [name, data.destructive.rules[id], id])
	}
	| {msg |
		class == "delete"
		msg := sprintf("%s deletes data: delete operations are denied by the default policy (rule delete-class)", [name])
	}
	| {msg |
		class == "unknown"
		input.resource.type != "host"
		msg := sprintf("%s is not an operation in the service catalog: unknown operations are denied by the default policy (rule unknown-operation)", [name])
	}
	| {msg |
		"destructive-tables" in rules
		msg := sprintf("%s: settings.json has no \"destructive\" tables to tell whether it is destructive, so it is denied by the default policy (rule destructive-tables)", [name])
	}
)

# The destructive rules naming an action: one lookup per table of data.destructive.
destructive_rules(name) := (
	{id | some id in t.names[name]}
	# `under`: the prefixes of 2, 3 and 4 parts that have parts below them
	| {id |
		parts[2]
		some id in t.under[concat(".", [parts[0], parts[1]])]
	}
	| {id |
		parts[3]
		some id in t.under[concat(".", [parts[0], parts[1], parts[2]])]
	}
	| {id |
		parts[4]
		some id in t.under[concat(".", [parts[0], parts[1], parts[2], parts[3]])]
	}
	# GitHub REST, github.<area>.<operation id>: the id's words, and its first word
	| {id |
		parts[0] == "github"
		not parts[3]
		some word in split(parts[2], "-")
		scopes := t.github_words[word]
		some scope in ["*", parts[1]]
		some id in scopes[scope]
	}
	| {id |
		parts[0] == "github"
		not parts[3]
		scopes := t.github_verbs[split(parts[2], "-")[0]]
		some scope in ["*", parts[1]]
		some id in scopes[scope]
	}
	# Slack: the method of slack.<family>.<method> or slack.<family>.<sub>.<method>
	| {id |
		parts[0] == "slack"
		not parts[4]
		some id in t.slack_methods[parts[count(parts) - 1]]
	}
) if {
	t := data.destructive
	parts := split(name, ".")
} else := {"destructive-tables"}

github_owner := input.resource.properties.owner if input.resource.type == "github.repo"

github_owner := input.resource.properties.org if input.resource.type == "github.org"

# ---------------------------------------------------------------------------------------
# escalate

escalate := (
	# rule tool_definition_changed: an MCP tool the server redefined since it was pinned
	{msg |
		input.context.tool.changed == true
		msg := sprintf("%s: the MCP server changed this tool's definition (%s) since AgentGate pinned it; a person must look before it is used, and `agentgate mcp accept %s %s` pins the new one (rule tool_definition_changed)", [input.action.name, concat(", ", input.context.tool.diff.fields), input.context.mcp.server, input.context.mcp.tool])
	}
	# rule write-escalates: every write, the action's or a GraphQL field's
	| {msg |
		input.action.properties.class == "write"
		msg := sprintf("%s changes data: writes need a person's approval under the default policy (rule write-escalates)", [input.action.name])
	}
	| {msg |
		some f in input.context.body.graphql.fields
		f.class == "write"
		msg := sprintf("github.graphql.%s.%s changes data: writes need a person's approval under the default policy (rule write-escalates)", [f.operation, f.field])
	}
	# ... and for mail, the recipient domains outside settings.internal_domains (a domain
	# is inside when it is one of them or a subdomain of one: ".<domain>" ends with
	# ".<internal domain>", case-insensitively)
	| {msg |
		domains := input.context.body.email.domains
		input.action.properties.class == "write"
		internal := {concat("", [".", lower(i)]) | some i in data.settings.internal_domains}
		external := {d | some d in domains; not strings.any_suffix_match(concat("", [".", lower(d)]), internal)}
		external != set()
		msg := sprintf("%s mails domains outside settings.internal_domains: %s (rule write-escalates)", [input.action.name, concat(", ", sort(external))])
	}
)

# ---------------------------------------------------------------------------------------
# Budgets: how much of an action an agent may do, not just whether. AgentGate counts the
# requests let through per key in a sliding window (settings.budgets); once the limit is
# reached, `over` applies. Both below are on top of the approval the write needs anyway.

budgets contains b if {
	# budget external-mail: mail with a recipient outside settings.internal_domains
	input.action.properties.class == "write"
	domains := input.context.body.email.domains
	internal := {concat("", [".", lower(i)]) | some i in data.settings.internal_domains}
	some d in domains
	not strings.any_suffix_match(concat("", [".", lower(d)]), internal)
	s := data.settings.budgets.external_mail
	b := {"key": ["external-mail", input.subject.id], "limit": s.limit, "window": s.window, "over": "deny"}
}

budgets contains b if {
	# budget slack-public-posts: posts to a channel in settings.public_channels
	input.action.name in {"slack.chat.postMessage", "slack.chat.scheduleMessage", "slack.chat.meMessage"}
	channel := input.context.body.channel
	is_string(channel)
	lower(trim_prefix(channel, "#")) in {lower(trim_prefix(p, "#")) | some p in data.settings.public_channels}
	s := data.settings.budgets.slack_public_posts
	b := {"key": ["slack-public-posts", input.subject.id], "limit": s.limit, "window": s.window, "over": "deny"}
}

# ---------------------------------------------------------------------------------------
# Consent text: "<agent>: <action> <resource>", at most 64 characters of letters, digits,
# space and +-_.,:# (what CIBA providers accept). "/" becomes ":", any other character "_".

binding_message := substring(safe_text(text, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 +-_.,:#"), 0, 64) if {
	text := replace(sprintf("%s: %s %s", [agent_name(input.subject), input.action.name, object.get(input, ["resource", "id"], "")]), "/", ":")
}

agent_name(subject) := name if {
	name := subject.properties.name
	is_string(name)
	name != ""
} else := last if {
	parts := split(subject.id, "/")
	last := parts[count(parts) - 1]
} else := "agent"

# trim() removes every allowed character from both ends: "" means nothing else is there.
safe_text(s, allowed) := s if {
	trim(s, allowed) == ""
} else := concat("", [safe_char(substring(s, i, 1), allowed) | some i in numbers.range(0, count(s) - 1)])

safe_char(c, allowed) := c if {
	contains(allowed, c)
} else := "_"
