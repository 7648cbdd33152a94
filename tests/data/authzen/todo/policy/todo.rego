# The OpenID AuthZEN Todo interop scenario (openid/authzen interop/, "Todo 1.1" payload spec,
# AuthZEN 1.0 draft 02) as an AgentGate policy, for tests/cases/authzen.rs.
#
# Users (data.json, keyed by the opaque subject ids the Todo backend sends; the Todo app's
# PIP attributes): Rick (admin, evil_genius), Morty and Summer (editor), Beth and Jerry
# (viewer). data.json's `roles` say what each role grants, per action: "any" (every
# resource) or "own" (todos whose resource.properties.ownerID is the user's id):
#   viewer       can_read_user, can_read_todos
#   editor       viewer + can_create_todo, can_update_todo and can_delete_todo on own todos
#   admin        editor + can_delete_todo on any todo
#   evil_genius  editor + can_update_todo on any todo
# A subject the directory does not know, or an action no role grants, is denied.
package agentgate

import rego.v1

# The subject: a Todo subject id, or the user's e-mail (as the Todo backend's directory also
# accepts).
user := u if {
	u := data.todo.users[input.subject.id]
} else := u if {
	some u in data.todo.users
	u.email == input.subject.id
}

owner := object.get(input, ["resource", "properties", "ownerID"], "")

# The user's roles granting the action on every resource, and on the user's own todos.
grants(scope) := {role |
	some role in user.roles
	data.todo.roles[role][input.action.name] == scope
}

decision := {"effect": "allow", "reasons": [reason]} if {
	roles := grants("any")
	count(roles) > 0
	reason := sprintf("%s may %s: role %s (rule %s)", [user.name, input.action.name, concat(",", sort(roles)), input.action.name])
} else := {"effect": "allow", "reasons": [reason]} if {
	roles := grants("own")
	count(roles) > 0
	owner == user.id
	reason := sprintf("%s may %s on their own todo: role %s (rule %s-own)", [user.name, input.action.name, concat(",", sort(roles)), input.action.name])
} else := {"effect": "deny", "reasons": [reason]} if {
	not user
	reason := sprintf("subject %s is not in the Todo directory (rule unknown-subject)", [input.subject.id])
} else := {"effect": "deny", "reasons": [reason]} if {
	reason := sprintf("%s (roles %s) may not %s %s %s owned by %v (rule fail-closed)", [user.name, concat(",", user.roles), input.action.name, input.resource.type, input.resource.id, owner])
}
