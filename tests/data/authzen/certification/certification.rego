# The OpenID AuthZEN Authorization API 1.0 certification fixture
# (openid/authzen certification/authorization-api-1_0-scenario.md, "Required Fixture", c-1)
# as an AgentGate policy, for the conformance tests in tests/cases/authzen.rs. The subjects,
# records and actions are in fixture.json.
#
# Required Policy Behaviour (c-1-4), the only decisions the scenario fixes:
#   1 alice read record-1   allow    5 alice write a record with properties.status "archived"  deny
#   2 alice write record-1  allow    6 a subject with properties.role "admin" writes an
#   3 bob read record-1     allow      archived record                                         allow
#   4 bob write record-1    deny     7 alice delete record-1, action properties.soft true      allow
#                                    8 alice delete record-1, action properties.soft false     deny
#
# Rules (deny beats allow; a request no rule allows is denied):
#   read            allow  a fixture user reads a fixture record
#   write-editor    allow  an editor (alice) writes a record that is not archived
#   write-admin     allow  a fixture user whose request says properties.role "admin" writes
#   archived        deny   writing an archived record without properties.role "admin"; the
#                          status is the request's resource.properties.status, else the
#                          fixture's
#   soft-delete     allow  an editor or an admin deletes with action properties.soft true
#   hard-delete     deny   a delete without action properties.soft true
#   unknown-*       deny   a subject, record or action the fixture does not name
# The admin role is taken from the request only: rule 4 denies bob's write without
# properties, so the fixture's "bob is an admin" cannot be assumed.
package agentgate

import rego.v1

fixture := data.certification

subject := s if {
	input.subject.type == "user"
	s := fixture.subjects[input.subject.id]
}

record := r if {
	input.resource.type == "record"
	r := fixture.resources[input.resource.id]
}

status := s if {
	s := input.resource.properties.status
} else := record.status

admin if input.subject.properties.role == "admin"

editor if subject.editor == true

tuple := sprintf("%s %s %s %s %s", [
	input.subject.type, input.subject.id, input.action.name,
	input.resource.type, input.resource.id,
])

# ---------------------------------------------------------------------------------------
# The decision

decision := {"effect": "deny", "reasons": sort(deny)} if {
	count(deny) > 0
} else := {"effect": "allow", "reasons": sort(allow)} if {
	count(allow) > 0
} else := {"effect": "deny", "reasons": [sprintf("no rule of the certification fixture allows %s (rule fail-closed)", [tuple])]}

deny := (
	{msg |
		not subject
		msg := sprintf("subject %s %s is not in the certification fixture (rule unknown-subject)", [input.subject.type, input.subject.id])
	}
	| {msg |
		not record
		msg := sprintf("resource %s %s is not in the certification fixture (rule unknown-resource)", [input.resource.type, input.resource.id])
	}
	| {msg |
		not input.action.name in fixture.actions
		msg := sprintf("action %s is not in the certification fixture (rule unknown-action)", [input.action.name])
	}
	| {msg |
		input.action.name == "write"
		status == "archived"
		not admin
		msg := sprintf("%s: the record is archived and only properties.role \"admin\" may write it (rule archived)", [tuple])
	}
	| {msg |
		input.action.name == "delete"
		not input.action.properties.soft == true
		msg := sprintf("%s: only soft deletes (action properties.soft true) are allowed (rule hard-delete)", [tuple])
	}
)

allow := (
	{msg |
		input.action.name == "read"
		subject
		record
		msg := sprintf("%s: fixture users read fixture records (rule read)", [tuple])
	}
	| {msg |
		input.action.name == "write"
		editor
		record
		status != "archived"
		msg := sprintf("%s: editors write records that are not archived (rule write-editor)", [tuple])
	}
	| {msg |
		input.action.name == "write"
		admin
		subject
		record
		msg := sprintf("%s: properties.role \"admin\" writes any record (rule write-admin)", [tuple])
	}
	| {msg |
		input.action.name == "delete"
		input.action.properties.soft == true
		editor
		record
		msg := sprintf("%s: editors soft-delete records (rule soft-delete)", [tuple])
	}
	| {msg |
		input.action.name == "delete"
		input.action.properties.soft == true
		admin
		subject
		record
		msg := sprintf("%s: properties.role \"admin\" soft-deletes records (rule soft-delete)", [tuple])
	}
)
