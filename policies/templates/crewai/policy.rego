# AgentGate template: crewai.
#
# For CrewAI crews running their tools locally. crewai-tools ships one GitHub tool that calls
# GitHub itself, GithubSearchTool (its loader reads a repository through PyGithub); its Gmail,
# Slack and GitHub "apps" (CrewAI AMP integrations, Composio) run on the vendor's servers, so
# AgentGate never sees those calls as GitHub/Gmail/Slack operations. For Gmail and Slack, CrewAI
# documents wrapping LangChain tools, so this template also covers the langchain-community
# GmailToolkit and SlackToolkit tools. Every operation is listed below with the tool calling it.
#
#   allow     GithubSearchTool's repository reads; the Gmail and Slack tools' reads
#   escalate  the Gmail and Slack tools' writes (send/draft mail, post/schedule messages)
#   deny      mail to more than settings.max_recipients recipients, and everything the tools
#             never call: every GitHub write, other GitHub reads, all GitHub GraphQL, other
#             Gmail and Slack methods, unknown hosts (CrewAI AMP, Composio and telemetry included;
#             except GET on settings.read_hosts and any request to settings.model_hosts)
# Deny beats escalate beats allow; nothing matched is a deny.
#
# Cost: this runs for every request, and in regorus each rule evaluated or function called
# costs about as much as a dozen lookups; hence `deny`, `escalate` and `allow` are unions of
# set comprehensions (one per rule), and few helper rules.
package agentgate

import rego.v1

# ---------------------------------------------------------------------------------------
# action -> the tool(s) that call it.

toolkit_reads := {
	# crewai_tools GithubSearchTool (GithubLoader), per content_types: repo, code, pr, issue
	"github.repos.get": "GithubSearchTool (repo)",
	"github.repos.get-readme": "GithubSearchTool (code)",
	"github.repos.get-content": "GithubSearchTool (code)",
	"github.pulls.list": "GithubSearchTool (pr)",
	"github.issues.list-for-repo": "GithubSearchTool (issue)",
	# langchain-community GmailToolkit tools wrapped as CrewAI tools
	"gmail.users.messages.list": "search_gmail",
	"gmail.users.messages.get": "get_gmail_message / search_gmail",
	"gmail.users.threads.get": "get_gmail_thread / search_gmail",
	# langchain-community SlackToolkit tools wrapped as CrewAI tools
	"slack.conversations.list": "get_channelid_name_dict",
	"slack.conversations.history": "get_messages",
}

toolkit_writes := {
	"gmail.users.drafts.create": "create_gmail_draft",
	"gmail.users.messages.send": "send_gmail_message",
	"slack.chat.postMessage": "send_message",
	"slack.chat.scheduleMessage": "schedule_message",
}

# Called by the tools, denied all the same (none: GithubSearchTool only reads).
toolkit_destructive := {}

# ---------------------------------------------------------------------------------------
# The request.

# GET or HEAD to a host in settings.read_hosts (case-insensitive).
read_host_get if {
	input.resource.type == "host"
	lower(input.resource.id) in {lower(h) | some h in data.settings.read_hosts}
	upper(input.action.properties.method) in {"GET", "HEAD"}
}

# A request to a host in settings.model_hosts (case-insensitive).
model_host if {
	input.resource.type == "host"
	lower(input.resource.id) in {lower(h) | some h in data.settings.model_hosts}
}

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
} else := {"effect": "deny", "reasons": [sprintf("%s (class %v) matches no rule of the crewai policy: denied (rule fail-closed)", [object.get(input, ["action", "name"], "the request"), object.get(input, ["action", "properties", "class"], "missing")])]}

# ---------------------------------------------------------------------------------------
# deny

deny := (
	# rule toolkit-destructive: the destructive operations the tools call, and every delete
	{msg |
		tool := toolkit_destructive[input.action.name]
		msg := sprintf("%s (%s) is destructive: denied by the crewai policy (rule toolkit-destructive)", [input.action.name, tool])
	}
	| {msg |
		input.action.properties.class == "delete"
		not toolkit_destructive[input.action.name]
		msg := sprintf("%s deletes data: denied by the crewai policy (rule toolkit-destructive)", [input.action.name])
	}
	# rule not-in-toolkit
	| {msg |
		input.resource.type != "host"
		input.action.properties.class != "delete"
		not toolkit_reads[input.action.name]
		not toolkit_writes[input.action.name]
		not toolkit_destructive[input.action.name]
		msg := sprintf("%s is not called by GithubSearchTool or the Gmail and Slack tools: denied by the crewai policy (rule not-in-toolkit)", [input.action.name])
	}
	# rule unknown-host
	| {msg |
		input.resource.type == "host"
		not read_host_get
		not model_host
		msg := sprintf("%s %s: unknown hosts are denied by the crewai policy (rule unknown-host)", [upper(object.get(input, ["action", "properties", "method"], "")), input.resource.id])
	}
	# rule bulk-mail
	| {msg |
		n := input.context.body.email.recipient_count
		limit := data.settings.max_recipients
		n > limit
		msg := sprintf("%s to %d recipients is bulk mail: more than %d recipients is denied by the crewai policy (rule bulk-mail)", [input.action.name, n, limit])
	}
)

# ---------------------------------------------------------------------------------------
# escalate

escalate := (
	# rule toolkit-write
	{msg |
		tool := toolkit_writes[input.action.name]
		msg := sprintf("%s (%s) changes data: a person approves it under the crewai policy (rule toolkit-write)", [input.action.name, tool])
	}
	# ... and a listed read that the catalog does not class as a read
	| {msg |
		tool := toolkit_reads[input.action.name]
		input.action.properties.class != "read"
		msg := sprintf("%s (%s) is not classed as a read: a person approves it under the crewai policy (rule toolkit-write)", [input.action.name, tool])
	}
)

# ---------------------------------------------------------------------------------------
# allow

allow := (
	# rule toolkit-read
	{msg |
		tool := toolkit_reads[input.action.name]
		input.action.properties.class == "read"
		msg := sprintf("%s (%s) is a toolkit read: allowed by the crewai policy (rule toolkit-read)", [input.action.name, tool])
	}
	# rule read-host (the type test first spares other requests the helper rule's cost)
	| {msg |
		input.resource.type == "host"
		read_host_get
		msg := sprintf("GET %s%s is a download from settings.read_hosts: allowed by the crewai policy (rule read-host)", [input.resource.id, object.get(input, ["context", "path"], "")])
	}
	# rule model-host
	| {msg |
		input.resource.type == "host"
		model_host
		msg := sprintf("%s is the agent's model API (settings.model_hosts): allowed by the crewai policy (rule model-host)", [input.resource.id])
	}
)

# ---------------------------------------------------------------------------------------
# Consent text: "<agent>: <action> <resource>", at most 64 characters of letters, digits,
# space and +-_.,:# (what CIBA providers accept). "/" becomes ":", anything else "_".

binding_message := substring(safe_text(sprintf("%s: %s %s", [agent_name(input.subject), input.action.name, object.get(input, ["resource", "id"], "")])), 0, 64)

agent_name(subject) := name if {
	name := subject.properties.name
	is_string(name)
	name != ""
} else := last if {
	parts := split(subject.id, "/")
	last := parts[count(parts) - 1]
} else := "agent"

binding_chars := "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 +-_.,:#"

# The first body is the usual case (one replace and one trim) and gives what the second
# gives, character by character.
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
