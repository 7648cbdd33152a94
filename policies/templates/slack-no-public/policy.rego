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
#
# Cost: this runs for every request, and in regorus each rule evaluated or function called
# costs about as much as a dozen lookups; hence `deny`, `escalate` and `allow` are unions of
# set comprehensions (one per rule), and few helper rules.
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

# Denied whatever the channel: the rule (id, why) a method name falls under. `parts` is the
# name split on ".".
#   slack-admin             slack.admin.*
#   slack-external-sharing  slack.files.sharedPublicURL, slack.conversations.<...Shared...>,
#                           slack.conversations.requestSharedInvite.<method>,
#                           slack.conversations.externalInvitePermissions.<method>
#   slack-credentials       slack.oauth.*, slack.openid.*, slack.tooling.tokens.<method>,
#                           slack.apps.manifest.<method>, slack.canvases.access.<method>,
#                           slack.slackLists.access.<method>
forbidden(parts) := ["slack-admin", "Slack workspace administration (admin.* methods)"] if {
	parts[1] == "admin"
	parts[2]
} else := ["slack-credentials", "token exchange, rotation and app configuration"] if {
	parts[1] in {"oauth", "openid"}
	parts[2]
} else := ["slack-credentials", "token exchange, rotation and app configuration"] if {
	[parts[1], parts[2]] in {["tooling", "tokens"], ["apps", "manifest"], ["canvases", "access"], ["slackLists", "access"]}
	parts[3]
	not parts[4]
} else := ["slack-external-sharing", "making files public or sharing conversations with other organizations (Slack Connect)"] if {
	[parts[1], parts[2]] == ["files", "sharedPublicURL"]
	not parts[3]
} else := ["slack-external-sharing", "making files public or sharing conversations with other organizations (Slack Connect)"] if {
	parts[1] == "conversations"
	not parts[3]
	contains(parts[2], "Shared")
} else := ["slack-external-sharing", "making files public or sharing conversations with other organizations (Slack Connect)"] if {
	parts[1] == "conversations"
	parts[2] in {"requestSharedInvite", "externalInvitePermissions"}
	parts[3]
	not parts[4]
}

# ---------------------------------------------------------------------------------------
# The request.

# Every channel the request names: the body's channel(s) and the channel resource.
channels := ({c | c := input.context.body.channel; is_string(c)}
	| {c | some c in input.context.body.channels})
	| {c | input.resource.type == "slack.channel"; c := input.resource.id}

# Each channel the request names, by kind: "public" (in settings.public_channels),
# "private" (in settings.private_channels, or a direct message: ids starting D or G, or a
# user id U.../W..., which Slack delivers as a DM) or "unknown". Channels compare in lower
# case and without "#".
channel_kinds := {c: kind |
	some c in channels
	kind := channel_kind(c, lower(trim_prefix(c, "#")))
}

channel_kind(c, name) := "public" if {
	name in {lower(trim_prefix(p, "#")) | some p in data.settings.public_channels}
} else := "private" if {
	name in {lower(trim_prefix(p, "#")) | some p in data.settings.private_channels}
} else := "private" if {
	substring(c, 0, 1) in {"D", "G", "U", "W"}
	c == upper(c)
	count(c) >= 9
} else := "unknown"

targets(kind) := {c | some c, k in channel_kinds; k == kind}

# ---------------------------------------------------------------------------------------
# The decision: deny beats escalate beats allow; nothing matched is a deny.

decision := {"effect": "deny", "reasons": sort(deny)} if {
	deny != set()
} else := {
	"effect": "escalate",
	"reasons": sort(escalate),
	"consent": {"binding_message": binding_message},
} if {
	escalate != set()
} else := {"effect": "allow", "reasons": sort(allow)} if {
	allow != set()
} else := {"effect": "deny", "reasons": [sprintf("%s (class %v) matches no rule of the slack-no-public policy: denied (rule fail-closed)", [object.get(input, ["action", "name"], "the request"), object.get(input, ["action", "properties", "class"], "missing")])]}

# ---------------------------------------------------------------------------------------
# deny

deny := (
	# rule public-channel
	{msg |
		input.action.name in posting
		targets("public") != set()
		msg := sprintf("%s to public channel %s: posting to public channels is denied by the slack-no-public policy (rule public-channel)", [input.action.name, concat(", ", sort(targets("public")))])
	}
	# rules slack-admin, slack-external-sharing, slack-credentials (see `forbidden`)
	| {msg |
		input.action.properties.class != "read"
		startswith(input.action.name, "slack.")
		[id, why] := forbidden(split(input.action.name, "."))
		msg := sprintf("%s is %s: denied by the slack-no-public policy (rule %s)", [input.action.name, why, id])
	}
	# rule slack-delete
	| {msg |
		input.action.properties.class == "delete"
		input.action.properties.service == "slack"
		msg := sprintf("%s deletes, removes or revokes: denied by the slack-no-public policy (rule slack-delete)", [input.action.name])
	}
	# rule unknown-operation
	| {msg |
		input.action.properties.class == "unknown"
		input.action.properties.service == "slack"
		msg := sprintf("%s is not a method in the Slack catalog: denied by the slack-no-public policy (rule unknown-operation)", [input.action.name])
	}
	# rule not-slack
	| {msg |
		input.resource.type != "host"
		not input.action.properties.service == "slack"
		msg := sprintf("%s is not a Slack method: the slack-no-public policy only covers Slack (rule not-slack)", [input.action.name])
	}
	# rule unknown-host
	| {msg |
		input.resource.type == "host"
		msg := sprintf("%s is not a known service: unknown hosts are denied by the slack-no-public policy (rule unknown-host)", [input.resource.id])
	}
)

# ---------------------------------------------------------------------------------------
# escalate

escalate := (
	# rule unknown-channel
	{msg |
		input.action.name in posting
		targets("unknown") != set()
		msg := sprintf("%s to %s: the channel is in neither settings.public_channels nor settings.private_channels, so a person approves it (rule unknown-channel)", [input.action.name, concat(", ", sort(targets("unknown")))])
	}
	| {msg |
		input.action.name in posting
		channels == set()
		msg := sprintf("%s names no channel AgentGate can see, so a person approves it (rule unknown-channel)", [input.action.name])
	}
	# rule slack-write
	| {msg |
		input.action.properties.class == "write"
		input.action.properties.service == "slack"
		not input.action.name in posting
		msg := sprintf("%s changes Slack: a person approves it under the slack-no-public policy (rule slack-write)", [input.action.name])
	}
)

# ---------------------------------------------------------------------------------------
# allow

allow := (
	# rule slack-read
	{msg |
		input.action.properties.class == "read"
		input.action.properties.service == "slack"
		msg := sprintf("%s is a Slack read: allowed by the slack-no-public policy (rule slack-read)", [input.action.name])
	}
	# rule private-channel
	| {msg |
		input.action.name in posting
		channels != set()
		channels == targets("private")
		msg := sprintf("%s to private conversation %s: allowed by the slack-no-public policy (rule private-channel)", [input.action.name, concat(", ", sort(channels))])
	}
)

# ---------------------------------------------------------------------------------------
# Consent text: "<agent>: <method> <channel>", at most 64 characters of letters, digits,
# space and +-_.,:# (what CIBA providers accept).

binding_message := substring(safe_text(sprintf("%s: %s %s", [agent_name(input.subject), trim_prefix(input.action.name, "slack."), concat(",", sort(channels))])), 0, 64)

agent_name(subject) := name if {
	name := subject.properties.name
	is_string(name)
	name != ""
} else := last if {
	parts := split(subject.id, "/")
	last := parts[count(parts) - 1]
} else := "agent"

binding_chars := "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 +-_.,:#"

# "/" becomes ":", any other character outside binding_chars "_". The first body is the
# usual case (one replace and one trim) and gives what the second gives, character by character.
safe_text(s) := t if {
	t := replace(s, "/", ":")
	trim(t, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 +-_.,:#") == ""
} else := concat("", [safe_char(substring(s, i, 1)) | some i in numbers.range(0, count(s) - 1)])

safe_char(c) := c if contains(binding_chars, c)

safe_char(c) := ":" if c == "/"

safe_char(c) := "_" if {
	not contains(binding_chars, c)
	c != "/"
}
