# AgentGate template: github-readonly.
#
#   allow  GitHub REST reads (GET/HEAD catalog operations) and GraphQL documents whose
#          every top-level field is a query field
#   deny   every other GitHub action: REST writes and deletes, any GraphQL mutation (also one
#          hidden beside queries), unknown GitHub paths, GraphQL documents too large to inspect;
#          every other service; unknown hosts
# Nothing escalates. Deny beats allow; nothing matched is a deny.
package agentgate

import rego.v1

action_name := input.action.name

action_class := input.action.properties.class

is_github if input.action.properties.service == "github"

graphql_fields := object.get(input, ["context", "body", "graphql", "fields"], [])

# ---------------------------------------------------------------------------------------
# deny

deny contains msg if {
	is_github
	action_class != "read"
	action_class != "unknown"
	msg := sprintf("%s changes GitHub (class %s): the github-readonly policy only allows reads (rule github-write)", [action_name, action_class])
}

deny contains msg if {
	some f in graphql_fields
	f.class != "read"
	msg := sprintf("the GraphQL document contains %s %s (class %s): the github-readonly policy only allows queries (rule github-write)", [f.operation, f.field, f.class])
}

deny contains msg if {
	is_github
	action_class == "unknown"
	msg := sprintf("%s is not an operation in the GitHub catalog: unknown operations are denied by the github-readonly policy (rule unknown-operation)", [action_name])
}

deny contains msg if {
	startswith(action_name, "github.graphql.")
	input.context.body_truncated == true
	msg := "the GraphQL document is larger than AgentGate inspects: denied by the github-readonly policy (rule graphql-uninspectable)"
}

deny contains msg if {
	input.context.body.graphql.list_truncated == true
	msg := "the GraphQL document has more top-level fields than AgentGate lists: denied by the github-readonly policy (rule graphql-uninspectable)"
}

deny contains msg if {
	not is_github
	input.resource.type != "host"
	msg := sprintf("%s is not a GitHub operation: the github-readonly policy only allows GitHub reads (rule not-github)", [action_name])
}

deny contains msg if {
	input.resource.type == "host"
	msg := sprintf("%s is not a known service: unknown hosts are denied by the github-readonly policy (rule unknown-host)", [input.resource.id])
}

# ---------------------------------------------------------------------------------------
# allow

allow contains msg if {
	is_github
	action_class == "read"
	msg := sprintf("%s is a GitHub read: reads are allowed by the github-readonly policy (rule github-read)", [action_name])
}

# ---------------------------------------------------------------------------------------
# The decision: deny beats allow; nothing matched is a deny.

decision := {"effect": "deny", "reasons": sort(deny)} if {
	count(deny) > 0
} else := {"effect": "allow", "reasons": sort(allow)} if {
	count(allow) > 0
} else := {"effect": "deny", "reasons": [sprintf("%s (class %v) matches no rule of the github-readonly policy: denied (rule fail-closed)", [object.get(input, ["action", "name"], "the request"), object.get(input, ["action", "properties", "class"], "missing")])]}
