# AgentGate template: mcp-github. GitHub's remote MCP server, tool by tool
# ([[mcp.servers]] name = "github", url = "https://api.githubcopilot.com/mcp/").
#
#   allow     the read-only tools listed in `read_tools` (issues, pull requests, files,
#             search), in the organizations of `orgs`; session set-up, listings, pings and
#             notifications
#   escalate  the write tools listed in `ask_tools` (issues, comments, pull requests,
#             branches); a tool whose definition changed since it was pinned
#             (rule tool_definition_changed)
#   deny      every other tool (a tool this policy does not name, however the server
#             annotates it), merging and anything destructive; a tool the server never
#             listed; repositories outside `orgs`; every other MCP server; every non-MCP
#             request
# Deny beats escalate beats allow; nothing matched is a deny.
package agentgate

import rego.v1

# Tools that only read, allowed.
read_tools := {
	"get_me", "get_issue", "list_issues", "search_issues", "get_issue_comments",
	"get_pull_request", "list_pull_requests", "get_pull_request_files",
	"get_pull_request_reviews", "get_file_contents", "search_code", "search_repositories",
	"list_commits", "get_commit", "list_branches",
}

# Tools that change something, held for a person.
ask_tools := {
	"create_issue", "update_issue", "add_issue_comment", "create_pull_request",
	"update_pull_request", "create_branch", "create_or_update_file",
	"request_copilot_review",
}

# Organizations the agent works in.
orgs := {"acme"}

mcp := input.context.mcp

tool := mcp.tool

decision := {"effect": "deny", "reasons": sort(deny)} if {
	deny != set()
} else := {
	"effect": "escalate",
	"reasons": sort(escalate),
	"consent": {"binding_message": substring(sprintf("%s: %s %s", [object.get(input.subject.properties, "name", "agent"), tool, input.resource.id]), 0, 64)},
} if {
	escalate != set()
} else := {"effect": "allow", "reasons": [reason]} if {
	# rule read-tool
	mcp.method == "tools/call"
	tool in read_tools
	reason := sprintf("%s only reads: allowed by the mcp-github policy (rule read-tool)", [tool])
} else := {"effect": "allow", "reasons": [reason]} if {
	# rule session: set-up, listings, pings and notifications
	mcp.method != "tools/call"
	input.action.properties.class == "read"
	reason := sprintf("%s is session traffic: allowed by the mcp-github policy (rule session)", [input.action.name])
} else := {"effect": "deny", "reasons": [sprintf("%s matches no rule of the mcp-github policy: denied (rule fail-closed)", [object.get(input, ["action", "name"], "the request")])]}

deny := (
	# rule other-server: only the github MCP server
	{msg |
		object.get(input, ["context", "mcp", "server"], "") != "github"
		msg := sprintf("%s is not a call to the github MCP server: the mcp-github policy allows nothing else (rule other-server)", [input.action.name])
	}
	# rule unnamed-tool: a tool this policy does not name
	| {msg |
		mcp.method == "tools/call"
		not tool in read_tools
		not tool in ask_tools
		msg := sprintf("%s is not a tool the mcp-github policy names (merging, deleting and anything new are denied) (rule unnamed-tool)", [tool])
	}
	# rule unlisted-tool: a tool the server never listed cannot be judged by its definition
	| {msg |
		mcp.method == "tools/call"
		input.context.tool.listed == false
		msg := sprintf("%s was never listed by the server: call tools/list first (rule unlisted-tool)", [tool])
	}
	# rule outside-orgs
	| {msg |
		input.resource.type == "github.repo"
		not lower(input.resource.properties.owner) in orgs
		msg := sprintf("%s on %s: the mcp-github policy works in %s only (rule outside-orgs)", [tool, input.resource.id, concat(", ", sort(orgs))])
	}
	# rule unknown-method
	| {msg |
		input.action.properties.class == "unknown"
		msg := sprintf("%s is an MCP method AgentGate does not know: denied (rule unknown-method)", [input.action.name])
	}
)

escalate := (
	# rule ask-tool
	{msg |
		mcp.method == "tools/call"
		tool in ask_tools
		msg := sprintf("%s changes GitHub: a person approves it first under the mcp-github policy (rule ask-tool)", [tool])
	}
	# rule tool_definition_changed
	| {msg |
		input.context.tool.changed == true
		msg := sprintf("%s: the server changed this tool's definition since it was pinned; `agentgate mcp accept github %s` after a look (rule tool_definition_changed)", [tool, tool])
	}
)
