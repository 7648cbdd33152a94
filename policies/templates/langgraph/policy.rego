# AgentGate template: langgraph.
#
# For LangGraph (and LangChain) agents using the langchain-community toolkits: GitHubToolkit
# (GitHubAPIWrapper, PyGithub), GmailToolkit (google-api-python-client) and SlackToolkit
# (slack_sdk). Every operation those tools call is listed below with the tool that calls it.
#
#   allow     the toolkits' reads
#   escalate  the toolkits' writes (comment, pull request, file create/update, branch,
#             review request, send/draft mail, post/schedule Slack messages)
#   deny      the toolkits' destructive operations (Delete File), mail to more than
#             settings.max_recipients recipients, and everything the toolkits never call:
#             other GitHub REST operations, all GitHub GraphQL, other Gmail and Slack
#             methods, unknown hosts (except GET on settings.read_hosts and any request to
#             settings.model_hosts, the agent's LLM API)
# Deny beats escalate beats allow; nothing matched is a deny.
#
# Cost: this runs for every request, and in regorus each rule evaluated or function called
# costs about as much as a dozen lookups; hence `deny`, `escalate` and `allow` are unions of
# set comprehensions (one per rule), and few helper rules.
package agentgate

import rego.v1

# ---------------------------------------------------------------------------------------
# action -> the toolkit tool(s) that call it.

toolkit_reads := {
	# GitHubAPIWrapper start-up (GitHub App authentication) and repository lookup
	"github.apps.list-installations": "GitHubAPIWrapper start-up",
	"github.repos.get": "GitHubAPIWrapper start-up",
	# GitHubToolkit
	"github.issues.list-for-repo": "Get Issues",
	"github.issues.get": "Get Issue / Comment on Issue",
	"github.issues.list-comments": "Get Issue",
	"github.pulls.list": "List open pull requests (PRs) / Create review request",
	"github.pulls.get": "Get Pull Request / Overview of files included in PR",
	"github.pulls.list-files": "Overview of files included in PR",
	"github.pulls.list-commits": "Get Pull Request",
	"github.repos.get-content": "Read File / Overview of existing files / Get files from a directory / Search code",
	"github.repos.list-branches": "List branches in this repository / Set active branch / Create a new branch",
	"github.repos.get-branch": "Create a new branch",
	"github.search.issues-and-pull-requests": "Search issues and pull requests",
	"github.search.code": "Search code",
	"github.repos.get-latest-release": "Get latest release",
	"github.repos.list-releases": "Get releases",
	"github.repos.get-release-by-tag": "Get release",
	# GmailToolkit
	"gmail.users.messages.list": "search_gmail",
	"gmail.users.messages.get": "get_gmail_message / search_gmail",
	"gmail.users.threads.get": "get_gmail_thread / search_gmail",
	# SlackToolkit
	"slack.conversations.list": "get_channelid_name_dict",
	"slack.conversations.history": "get_messages",
}

toolkit_writes := {
	"github.apps.create-installation-access-token": "GitHubAPIWrapper start-up (mints an installation token)",
	"github.issues.create-comment": "Comment on Issue",
	"github.pulls.create": "Create Pull Request",
	"github.repos.create-or-update-file-contents": "Create File / Update File",
	"github.git.create-ref": "Create a new branch",
	"github.pulls.request-reviewers": "Create review request",
	"gmail.users.drafts.create": "create_gmail_draft",
	"gmail.users.messages.send": "send_gmail_message",
	"slack.chat.postMessage": "send_message",
	"slack.chat.scheduleMessage": "schedule_message",
}

# Called by the toolkit, denied all the same.
toolkit_destructive := {"github.repos.delete-file": "Delete File"}

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
} else := {"effect": "deny", "reasons": [sprintf("%s (class %v) matches no rule of the langgraph policy: denied (rule fail-closed)", [object.get(input, ["action", "name"], "the request"), object.get(input, ["action", "properties", "class"], "missing")])]}

# ---------------------------------------------------------------------------------------
# deny

deny := (
	# rule toolkit-destructive: the destructive operations the tools call, and every delete
	{msg |
		tool := toolkit_destructive[input.action.name]
		msg := sprintf("%s (%s) is destructive: denied by the langgraph policy (rule toolkit-destructive)", [input.action.name, tool])
	}
	| {msg |
		input.action.properties.class == "delete"
		not toolkit_destructive[input.action.name]
		msg := sprintf("%s deletes data: denied by the langgraph policy (rule toolkit-destructive)", [input.action.name])
	}
	# rule not-in-toolkit
	| {msg |
		input.resource.type != "host"
		input.action.properties.class != "delete"
		not toolkit_reads[input.action.name]
		not toolkit_writes[input.action.name]
		not toolkit_destructive[input.action.name]
		msg := sprintf("%s is not called by the LangChain GitHub, Gmail or Slack toolkits: denied by the langgraph policy (rule not-in-toolkit)", [input.action.name])
	}
	# rule unknown-host
	| {msg |
		input.resource.type == "host"
		not read_host_get
		not model_host
		msg := sprintf("%s %s: unknown hosts are denied by the langgraph policy (rule unknown-host)", [upper(object.get(input, ["action", "properties", "method"], "")), input.resource.id])
	}
	# rule bulk-mail
	| {msg |
		n := input.context.body.email.recipient_count
		limit := data.settings.max_recipients
		n > limit
		msg := sprintf("%s to %d recipients is bulk mail: more than %d recipients is denied by the langgraph policy (rule bulk-mail)", [input.action.name, n, limit])
	}
)

# ---------------------------------------------------------------------------------------
# escalate

escalate := (
	# rule toolkit-write
	{msg |
		tool := toolkit_writes[input.action.name]
		msg := sprintf("%s (%s) changes data: a person approves it under the langgraph policy (rule toolkit-write)", [input.action.name, tool])
	}
	# ... and a listed read that the catalog does not class as a read
	| {msg |
		tool := toolkit_reads[input.action.name]
		input.action.properties.class != "read"
		msg := sprintf("%s (%s) is not classed as a read: a person approves it under the langgraph policy (rule toolkit-write)", [input.action.name, tool])
	}
)

# ---------------------------------------------------------------------------------------
# allow

allow := (
	# rule toolkit-read
	{msg |
		tool := toolkit_reads[input.action.name]
		input.action.properties.class == "read"
		msg := sprintf("%s (%s) is a toolkit read: allowed by the langgraph policy (rule toolkit-read)", [input.action.name, tool])
	}
	# rule read-host (the type test first spares other requests the helper rule's cost)
	| {msg |
		input.resource.type == "host"
		read_host_get
		msg := sprintf("GET %s%s is a file download in settings.read_hosts (Overview of files included in PR): allowed by the langgraph policy (rule read-host)", [input.resource.id, object.get(input, ["context", "path"], "")])
	}
	# rule model-host
	| {msg |
		input.resource.type == "host"
		model_host
		msg := sprintf("%s is the agent's model API (settings.model_hosts): allowed by the langgraph policy (rule model-host)", [input.resource.id])
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
