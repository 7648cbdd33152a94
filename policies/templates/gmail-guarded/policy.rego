# AgentGate template: gmail-guarded.
#
#   allow     Gmail reads; sending or drafting mail whose recipients are all in
#             settings.internal_domains (or their subdomains)
#   escalate  sending or drafting mail to any other domain, or whose recipients AgentGate
#             could not see; other Gmail writes (labels, modify, import, vacation, watch)
#   deny      more than settings.max_recipients recipients (bulk); deleting or trashing mail;
#             forwarding, filters, delegates, send-as, POP/IMAP and encryption-key settings;
#             unknown Gmail operations; every other service; unknown hosts
# Deny beats escalate beats allow; nothing matched is a deny.
#
# Cost: this runs for every request, and in regorus each rule evaluated or function called
# costs about as much as a dozen lookups; hence `deny`, `escalate` and `allow` are unions of
# set comprehensions (one per rule), and few helper rules.
package agentgate

import rego.v1

# ---------------------------------------------------------------------------------------
# Named operation sets.

# Operations that carry a message AgentGate reads the recipients of.
mail_out(name) if name in {
	"gmail.users.messages.send",
	"gmail.users.drafts.create",
	"gmail.users.drafts.update",
	"gmail.users.drafts.send",
}

# Settings that send mail elsewhere or hand out access, below gmail.users.settings:
#   forwardingAddresses.<method>, delegates.<method>, filters.<method>
#   sendAs.<...>, cse.<...> (any depth)
#   updateAutoForwarding, updateImap, updatePop
exfiltration(parts) if {
	parts[3] in {"forwardingAddresses", "delegates", "filters"}
	parts[4]
	not parts[5]
}

exfiltration(parts) if {
	parts[3] in {"sendAs", "cse"}
	parts[4]
}

exfiltration(parts) if {
	parts[3] in {"updateAutoForwarding", "updateImap", "updatePop"}
	not parts[4]
}

# ---------------------------------------------------------------------------------------
# The request.

# The message's recipient domains outside settings.internal_domains (a domain is internal
# when it is one of them or a subdomain of one, case-insensitively).
external_domains := {d |
	domains := input.context.body.email.domains
	internal := {concat("", [".", lower(i)]) | some i in data.settings.internal_domains}
	some d in domains
	not strings.any_suffix_match(concat("", [".", lower(d)]), internal)
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
} else := {"effect": "deny", "reasons": [sprintf("%s (class %v) matches no rule of the gmail-guarded policy: denied (rule fail-closed)", [object.get(input, ["action", "name"], "the request"), object.get(input, ["action", "properties", "class"], "missing")])]}

# ---------------------------------------------------------------------------------------
# deny

deny := (
	# rule bulk-mail
	{msg |
		n := input.context.body.email.recipient_count
		mail_out(input.action.name)
		limit := data.settings.max_recipients
		n > limit
		msg := sprintf("%s to %d recipients is bulk mail: more than %d recipients is denied by the gmail-guarded policy (rule bulk-mail)", [input.action.name, n, limit])
	}
	# rule gmail-delete: delete-class Gmail operations, and deleting or trashing mail whatever
	# class the catalog gives it
	| {msg |
		input.action.properties.class == "delete"
		input.action.properties.service == "gmail"
		msg := sprintf("%s deletes mail or settings: denied by the gmail-guarded policy (rule gmail-delete)", [input.action.name])
	}
	| {msg |
		input.action.properties.class != "delete"
		input.action.name in {
			"gmail.users.messages.delete", "gmail.users.messages.batchDelete", "gmail.users.messages.trash",
			"gmail.users.threads.delete", "gmail.users.threads.trash", "gmail.users.drafts.delete",
		}
		msg := sprintf("%s deletes or trashes mail: denied by the gmail-guarded policy (rule gmail-delete)", [input.action.name])
	}
	# rule gmail-exfiltration
	| {msg |
		input.action.properties.class != "read"
		startswith(input.action.name, "gmail.users.settings.")
		exfiltration(split(input.action.name, "."))
		msg := sprintf("%s changes forwarding, filters, delegation, send-as, POP/IMAP or encryption settings (mail exfiltration): denied by the gmail-guarded policy (rule gmail-exfiltration)", [input.action.name])
	}
	# rule unknown-operation
	| {msg |
		input.action.properties.class == "unknown"
		input.action.properties.service == "gmail"
		msg := sprintf("%s is not an operation in the Gmail catalog: denied by the gmail-guarded policy (rule unknown-operation)", [input.action.name])
	}
	# rule not-gmail
	| {msg |
		input.resource.type != "host"
		not input.action.properties.service == "gmail"
		msg := sprintf("%s is not a Gmail operation: the gmail-guarded policy only covers Gmail (rule not-gmail)", [input.action.name])
	}
	# rule unknown-host
	| {msg |
		input.resource.type == "host"
		msg := sprintf("%s is not a known service: unknown hosts are denied by the gmail-guarded policy (rule unknown-host)", [input.resource.id])
	}
)

# ---------------------------------------------------------------------------------------
# escalate

escalate := (
	# rule external-recipients
	{msg |
		input.context.body.email
		external_domains != set()
		mail_out(input.action.name)
		msg := sprintf("%s mails domains outside settings.internal_domains (%s): a person approves it under the gmail-guarded policy (rule external-recipients)", [input.action.name, concat(", ", sort(external_domains))])
	}
	# rule recipients-unknown
	| {msg |
		not input.context.body.email
		mail_out(input.action.name)
		msg := sprintf("%s: AgentGate could not see the recipients, so a person approves it under the gmail-guarded policy (rule recipients-unknown)", [input.action.name])
	}
	# rule gmail-write
	| {msg |
		input.action.properties.class == "write"
		input.action.properties.service == "gmail"
		not mail_out(input.action.name)
		msg := sprintf("%s changes the mailbox: a person approves it under the gmail-guarded policy (rule gmail-write)", [input.action.name])
	}
)

# ---------------------------------------------------------------------------------------
# allow

allow := (
	# rule gmail-read
	{msg |
		input.action.properties.class == "read"
		input.action.properties.service == "gmail"
		msg := sprintf("%s is a Gmail read: allowed by the gmail-guarded policy (rule gmail-read)", [input.action.name])
	}
	# rule internal-recipients
	| {msg |
		email := input.context.body.email
		email
		external_domains == set()
		mail_out(input.action.name)
		msg := sprintf("%s only mails settings.internal_domains (%s): allowed by the gmail-guarded policy (rule internal-recipients)", [input.action.name, concat(", ", email.domains)])
	}
)

# ---------------------------------------------------------------------------------------
# Consent text: "<agent>: <action> <first outside domain>", at most 64 characters of
# letters, digits, space and +-_.,:# (what CIBA providers accept).

consent_target := sprintf("to %s", [sort(external_domains)[0]]) if {
	external_domains != set()
} else := object.get(input, ["resource", "id"], "")

binding_message := substring(safe_text(sprintf("%s: %s %s", [agent_name(input.subject), trim_prefix(input.action.name, "gmail.users."), consent_target])), 0, 64)

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
