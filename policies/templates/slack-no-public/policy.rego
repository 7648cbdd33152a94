# AgentGate template: slack-no-public.
#
#   allow     Slack reads; posting to conversations known to be private: listed in
#             settings.private_channels, or direct messages (ids D..., G..., or a user id U.../W...)
#   escalate  posting where a channel is not listed in either setting (or no channel is
#             visible); other Slack writes (create/join/invite, reactions, profile, ...)
#   deny      posting to any channel in settings.public_channels; Slack admin.* methods;
#             deletes and revokes; public file links and Slack Connect sharing; unknown Slack
#             methods; every other service; unknown hosts
# A request only names channels by id (C0123ABCD) or name, never says whether they are
# public, so settings.public_channels / private_channels (ids or names, "#" optional) carry it.
# Deny beats escalate beats allow; nothing matched is a deny.
package agentgate

import rego.v1

# ---------------------------------------------------------------------------------------
# Named method sets.

# Methods that publish something into a conversation.
posting := {
	"slack.chat.postMessage",
	"slack.chat.postEphemeral",
	"slack.chat.scheduleMessage",
	"slack.chat.meMessage",
	"slack.chat.update",
	"slack.chat.startStream",
	"slack.chat.appendStream",
	"slack.chat.stopStream",
	"slack.chat.unfurl",
	"slack.files.completeUploadExternal",
	"slack.files.remote.share",
	"slack.conversations.setTopic",
	"slack.conversations.setPurpose",
	"slack.conversations.canvases.create",
	"slack.bookmarks.add",
	"slack.bookmarks.edit",
	"slack.pins.add",
}

# Denied whatever the channel (patterns: see `matches`).
forbidden := [
	{"id": "slack-admin", "why": "Slack workspace administration (admin.* methods)", "patterns": ["slack.admin.**"]},
	{"id": "slack-external-sharing", "why": "making files public or sharing conversations with other organizations (Slack Connect)", "patterns": [
		"slack.files.sharedPublicURL",
		"slack.conversations.*Shared*",
		"slack.conversations.requestSharedInvite.*",
		"slack.conversations.externalInvitePermissions.*",
	]},
	{"id": "slack-credentials", "why": "token exchange, rotation and app configuration", "patterns": [
		"slack.oauth.**",
		"slack.openid.**",
		"slack.tooling.tokens.*",
		"slack.apps.manifest.*",
		"slack.canvases.access.*",
		"slack.slackLists.access.*",
	]},
]

# ---------------------------------------------------------------------------------------
# The request.

default settings := {}

settings := data.settings

action_name := input.action.name

action_class := input.action.properties.class

is_slack if input.action.properties.service == "slack"

# Every channel the request names: the body's channel(s) and the channel resource.
channels contains c if {
	c := input.context.body.channel
	is_string(c)
}

channels contains c if {
	some c in input.context.body.channels
}

channels contains input.resource.id if input.resource.type == "slack.channel"

norm(c) := lower(trim_prefix(c, "#"))

listed(setting) := {norm(c) | some c in object.get(settings, setting, [])}

public(c) if norm(c) in listed("public_channels")

# Direct messages and private groups have ids starting D or G; a user id posts to the DM.
private(c) if {
	not public(c)
	norm(c) in listed("private_channels")
}

private(c) if {
	not public(c)
	some prefix in ["D", "G", "U", "W"]
	startswith(c, prefix)
	c == upper(c)
	count(c) >= 9
}

public_targets := {c | some c in channels; public(c)}

unknown_targets := {c | some c in channels; not public(c); not private(c)}

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
	action_name in posting
	count(public_targets) > 0
	msg := sprintf("%s to public channel %s: posting to public channels is denied by the slack-no-public policy (rule public-channel)", [action_name, concat(", ", sort(public_targets))])
}

deny contains msg if {
	action_class != "read"
	some rule in forbidden
	some pattern in rule.patterns
	matches(pattern, action_name)
	msg := sprintf("%s is %s: denied by the slack-no-public policy (rule %s)", [action_name, rule.why, rule.id])
}

deny contains msg if {
	is_slack
	action_class == "delete"
	msg := sprintf("%s deletes, removes or revokes: denied by the slack-no-public policy (rule slack-delete)", [action_name])
}

deny contains msg if {
	is_slack
	action_class == "unknown"
	msg := sprintf("%s is not a method in the Slack catalog: denied by the slack-no-public policy (rule unknown-operation)", [action_name])
}

deny contains msg if {
	not is_slack
	input.resource.type != "host"
	msg := sprintf("%s is not a Slack method: the slack-no-public policy only covers Slack (rule not-slack)", [action_name])
}

deny contains msg if {
	input.resource.type == "host"
	msg := sprintf("%s is not a known service: unknown hosts are denied by the slack-no-public policy (rule unknown-host)", [input.resource.id])
}

# ---------------------------------------------------------------------------------------
# escalate

escalate contains msg if {
	action_name in posting
	count(unknown_targets) > 0
	msg := sprintf("%s to %s: the channel is in neither settings.public_channels nor settings.private_channels, so a person approves it (rule unknown-channel)", [action_name, concat(", ", sort(unknown_targets))])
}

escalate contains msg if {
	action_name in posting
	count(channels) == 0
	msg := sprintf("%s names no channel AgentGate can see, so a person approves it (rule unknown-channel)", [action_name])
}

escalate contains msg if {
	is_slack
	action_class == "write"
	not action_name in posting
	msg := sprintf("%s changes Slack: a person approves it under the slack-no-public policy (rule slack-write)", [action_name])
}

# ---------------------------------------------------------------------------------------
# allow

allow contains msg if {
	is_slack
	action_class == "read"
	msg := sprintf("%s is a Slack read: allowed by the slack-no-public policy (rule slack-read)", [action_name])
}

allow contains msg if {
	action_name in posting
	count(channels) > 0
	every c in channels {
		private(c)
	}
	msg := sprintf("%s to private conversation %s: allowed by the slack-no-public policy (rule private-channel)", [action_name, concat(", ", sort(channels))])
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
} else := {"effect": "deny", "reasons": [sprintf("%s (class %v) matches no rule of the slack-no-public policy: denied (rule fail-closed)", [object.get(input, ["action", "name"], "the request"), object.get(input, ["action", "properties", "class"], "missing")])]}

# ---------------------------------------------------------------------------------------
# Consent text: "<agent>: <method> <channel>", at most 64 characters of letters, digits,
# space and +-_.,:# (what CIBA providers accept).

agent_name := name if {
	name := input.subject.properties.name
	is_string(name)
	name != ""
} else := last if {
	parts := split(input.subject.id, "/")
	last := parts[count(parts) - 1]
} else := "agent"

consent_target := concat(",", sort(channels)) if count(channels) > 0 else := ""

binding_message := substring(safe_text(sprintf("%s: %s %s", [agent_name, trim_prefix(action_name, "slack."), consent_target])), 0, 64)

binding_chars := "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 +-_.,:#"

safe_text(s) := "" if s == ""

safe_text(s) := concat("", [safe_char(substring(s, i, 1)) | some i in numbers.range(0, count(s) - 1)]) if s != ""

safe_char(c) := c if contains(binding_chars, c)

safe_char(c) := ":" if c == "/"

safe_char(c) := "_" if {
	not contains(binding_chars, c)
	c != "/"
}
