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

default settings := {}

settings := data.settings

action_name := input.action.name

action_class := input.action.properties.class

read_hosts := {lower(h) | some h in object.get(settings, "read_hosts", [])}

model_hosts := {lower(h) | some h in object.get(settings, "model_hosts", [])}

# ---------------------------------------------------------------------------------------
# deny

deny contains msg if {
	tool := toolkit_destructive[action_name]
	msg := sprintf("%s (%s) is destructive: denied by the langgraph policy (rule toolkit-destructive)", [action_name, tool])
}

deny contains msg if {
	action_class == "delete"
	not toolkit_destructive[action_name]
	msg := sprintf("%s deletes data: denied by the langgraph policy (rule toolkit-destructive)", [action_name])
}

deny contains msg if {
	input.resource.type != "host"
	action_class != "delete"
	not toolkit_reads[action_name]
	not toolkit_writes[action_name]
	not toolkit_destructive[action_name]
	msg := sprintf("%s is not called by the LangChain GitHub, Gmail or Slack toolkits: denied by the langgraph policy (rule not-in-toolkit)", [action_name])
}

deny contains msg if {
	input.resource.type == "host"
	not read_host_get
	not lower(input.resource.id) in model_hosts
	msg := sprintf("%s %s: unknown hosts are denied by the langgraph policy (rule unknown-host)", [upper(object.get(input, ["action", "properties", "method"], "")), input.resource.id])
}

deny contains msg if {
	limit := settings.max_recipients
	n := input.context.body.email.recipient_count
	n > limit
	msg := sprintf("%s to %d recipients is bulk mail: more than %d recipients is denied by the langgraph policy (rule bulk-mail)", [action_name, n, limit])
}

# ---------------------------------------------------------------------------------------
# escalate

escalate contains msg if {
	tool := toolkit_writes[action_name]
	msg := sprintf("%s (%s) changes data: a person approves it under the langgraph policy (rule toolkit-write)", [action_name, tool])
}

# A listed read that the catalog does not class as a read is treated as a write.
escalate contains msg if {
	tool := toolkit_reads[action_name]
	action_class != "read"
	msg := sprintf("%s (%s) is not classed as a read: a person approves it under the langgraph policy (rule toolkit-write)", [action_name, tool])
}

# ---------------------------------------------------------------------------------------
# allow

allow contains msg if {
	tool := toolkit_reads[action_name]
	action_class == "read"
	msg := sprintf("%s (%s) is a toolkit read: allowed by the langgraph policy (rule toolkit-read)", [action_name, tool])
}

read_host_get if {
	input.resource.type == "host"
	lower(input.resource.id) in read_hosts
	upper(input.action.properties.method) in {"GET", "HEAD"}
}

allow contains msg if {
	read_host_get
	msg := sprintf("GET %s%s is a file download in settings.read_hosts (Overview of files included in PR): allowed by the langgraph policy (rule read-host)", [input.resource.id, object.get(input, ["context", "path"], "")])
}

allow contains msg if {
	input.resource.type == "host"
	lower(input.resource.id) in model_hosts
	msg := sprintf("%s is the agent's model API (settings.model_hosts): allowed by the langgraph policy (rule model-host)", [input.resource.id])
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
} else := {"effect": "deny", "reasons": [sprintf("%s (class %v) matches no rule of the langgraph policy: denied (rule fail-closed)", [object.get(input, ["action", "name"], "the request"), object.get(input, ["action", "properties", "class"], "missing")])]}

# ---------------------------------------------------------------------------------------
# Consent text: "<agent>: <action> <resource>", at most 64 characters of letters, digits,
# space and +-_.,:# (what CIBA providers accept). "/" becomes ":", anything else "_".

agent_name := name if {
	name := input.subject.properties.name
	is_string(name)
	name != ""
} else := last if {
	parts := split(input.subject.id, "/")
	last := parts[count(parts) - 1]
} else := "agent"

binding_message := substring(safe_text(sprintf("%s: %s %s", [agent_name, action_name, object.get(input, ["resource", "id"], "")])), 0, 64)

binding_chars := "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 +-_.,:#"

safe_text(s) := "" if s == ""

safe_text(s) := concat("", [safe_char(substring(s, i, 1)) | some i in numbers.range(0, count(s) - 1)]) if s != ""

safe_char(c) := c if contains(binding_chars, c)

safe_char(c) := ":" if c == "/"

safe_char(c) := "_" if {
	not contains(binding_chars, c)
	c != "/"
}
