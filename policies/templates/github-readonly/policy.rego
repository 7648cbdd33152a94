# AgentGate template: github-readonly.
#
#   allow  GitHub REST reads (GET/HEAD catalog operations) and GraphQL documents whose
#          every top-level field is a query field
#   deny   every other GitHub action: REST writes and deletes, any GraphQL mutation (also one
#          hidden beside queries), unknown GitHub paths, GraphQL documents too large to inspect;
#          every other service; unknown hosts
# Nothing escalates. Deny beats allow; nothing matched is a deny.
#
# Cost: this runs for every request, and in regorus each rule evaluated or function called
# costs about as much as a dozen lookups; hence `deny` is one union of set comprehensions
# (one per rule) and the allow rule sits in `decision`.
package agentgate

import rego.v1

# ---------------------------------------------------------------------------------------
# The decision: deny beats allow; nothing matched is a deny.

decision := {"effect": "deny", "reasons": sort(deny)} if {
	deny != set()
} else := {"effect": "allow", "reasons": [reason]} if {
	# rule github-read
	input.action.properties.service == "github"
	input.action.properties.class == "read"
	reason := sprintf("%s is a GitHub read: reads are allowed by the github-readonly policy (rule github-read)", [input.action.name])
} else := {"effect": "deny", "reasons": [sprintf("%s (class %v) matches no rule of the github-readonly policy: denied (rule fail-closed)", [object.get(input, ["action", "name"], "the request"), object.get(input, ["action", "properties", "class"], "missing")])]}

# ---------------------------------------------------------------------------------------
# deny

deny := (
	# rule github-write: a GitHub action that is not a read, or a GraphQL field that is not
	# a query field
	{msg |
		input.action.properties.service == "github"
		class := input.action.properties.class
		class != "read"
		class != "unknown"
		msg := sprintf("%s changes GitHub (class %s): the github-readonly policy only allows reads (rule github-write)", [input.action.name, class])
	}
	| {msg |
		some f in input.context.body.graphql.fields
		f.class != "read"
		msg := sprintf("the GraphQL document contains %s %s (class %s): the github-readonly policy only allows queries (rule github-write)", [f.operation, f.field, f.class])
	}
	# rule unknown-operation
	| {msg |
		input.action.properties.class == "unknown"
		input.action.properties.service == "github"
		msg := sprintf("%s is not an operation in the GitHub catalog: unknown operations are denied by the github-readonly policy (rule unknown-operation)", [input.action.name])
	}
	# rule graphql-uninspectable
	| {msg |
		input.context.body_truncated == true
		startswith(input.action.name, "github.graphql")
		msg := "the GraphQL document is larger than AgentGate inspects: denied by the github-readonly policy (rule graphql-uninspectable)"
	}
	| {msg |
		input.context.body.graphql.list_truncated == true
		msg := "the GraphQL document has more top-level fields than AgentGate lists: denied by the github-readonly policy (rule graphql-uninspectable)"
	}
	# rule not-github
	| {msg |
		input.resource.type != "host"
		not input.action.properties.service == "github"
		msg := sprintf("%s is not a GitHub operation: the github-readonly policy only allows GitHub reads (rule not-github)", [input.action.name])
	}
	# rule unknown-host
	| {msg |
		input.resource.type == "host"
		msg := sprintf("%s is not a known service: unknown hosts are denied by the github-readonly policy (rule unknown-host)", [input.resource.id])
	}
)
