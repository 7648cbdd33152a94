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
package agentgate

import rego.v1

# ---------------------------------------------------------------------------------------
# Named operation sets.

# Operations that carry a message AgentGate reads the recipients of.
mail_out := {
	"gmail.users.messages.send",
	"gmail.users.drafts.create",
	"gmail.users.drafts.update",
	"gmail.users.drafts.send",
}

# Deleting mail, whatever class the catalog gives it.
mail_deletion := {
	"gmail.users.messages.delete",
	"gmail.users.messages.batchDelete",
	"gmail.users.messages.trash",
	"gmail.users.threads.delete",
	"gmail.users.threads.trash",
	"gmail.users.drafts.delete",
}

# Settings that send mail elsewhere or hand out access (patterns: see `matches`).
exfiltration := [
	"gmail.users.settings.forwardingAddresses.*",
	"gmail.users.settings.updateAutoForwarding",
	"gmail.users.settings.delegates.*",
	"gmail.users.settings.filters.*",
	"gmail.users.settings.sendAs.**",
	"gmail.users.settings.updateImap",
	"gmail.users.settings.updatePop",
	"gmail.users.settings.cse.**",
]

# ---------------------------------------------------------------------------------------
# The request.

default settings := {}

settings := data.settings

action_name := input.action.name

action_class := input.action.properties.class

is_gmail if input.action.properties.service == "gmail"

email := input.context.body.email

internal_domains := {lower(d) | some d in object.get(settings, "internal_domains", [])}

internal(domain) if lower(domain) in internal_domains

internal(domain) if {
	some d in internal_domains
	endswith(lower(domain), concat("", [".", d]))
}

external_domains := {d | some d in email.domains; not internal(d)}

# Pattern matching (like glob.match(pattern, ["."], name), without compiling a glob per call):
# "." separates segments; "*" matches within one segment (at most two per segment); a final
# ".**" matches any number of further segments. The first lines reject most patterns cheaply.
matches(pattern, name) if {
	parts := split(pattern, "*")
	startswith(name, parts[0])
	every part in parts {
		contains(name, part)
	}
	exact_match(pattern, name)
}

exact_match(pattern, name) if endswith(pattern, ".**")

exact_match(pattern, name) if {
	not endswith(pattern, ".**")
	ps := split(pattern, ".")
	ns := split(name, ".")
	count(ps) == count(ns)
	every i, p in ps {
		segment_matches(p, ns[i])
	}
}

segment_matches(p, s) if p == s

segment_matches(p, s) if {
	parts := split(p, "*")
	count(parts) == 2
	startswith(s, parts[0])
	endswith(s, parts[1])
	count(s) >= count(parts[0]) + count(parts[1])
}

segment_matches(p, s) if {
	parts := split(p, "*")
	count(parts) == 3
	startswith(s, parts[0])
	endswith(s, parts[2])
	middle := substring(s, count(parts[0]), (count(s) - count(parts[0])) - count(parts[2]))
	contains(middle, parts[1])
}

# ---------------------------------------------------------------------------------------
# deny

deny contains msg if {
	action_name in mail_out
	limit := settings.max_recipients
	email.recipient_count > limit
	msg := sprintf("%s to %d recipients is bulk mail: more than %d recipients is denied by the gmail-guarded policy (rule bulk-mail)", [action_name, email.recipient_count, limit])
}

deny contains msg if {
	is_gmail
	action_class == "delete"
	msg := sprintf("%s deletes mail or settings: denied by the gmail-guarded policy (rule gmail-delete)", [action_name])
}

deny contains msg if {
	action_name in mail_deletion
	action_class != "delete"
	msg := sprintf("%s deletes or trashes mail: denied by the gmail-guarded policy (rule gmail-delete)", [action_name])
}

deny contains msg if {
	action_class != "read"
	some pattern in exfiltration
	matches(pattern, action_name)
	msg := sprintf("%s changes forwarding, filters, delegation, send-as, POP/IMAP or encryption settings (mail exfiltration): denied by the gmail-guarded policy (rule gmail-exfiltration)", [action_name])
}

deny contains msg if {
	is_gmail
	action_class == "unknown"
	msg := sprintf("%s is not an operation in the Gmail catalog: denied by the gmail-guarded policy (rule unknown-operation)", [action_name])
}

deny contains msg if {
	not is_gmail
	input.resource.type != "host"
	msg := sprintf("%s is not a Gmail operation: the gmail-guarded policy only covers Gmail (rule not-gmail)", [action_name])
}

deny contains msg if {
	input.resource.type == "host"
	msg := sprintf("%s is not a known service: unknown hosts are denied by the gmail-guarded policy (rule unknown-host)", [input.resource.id])
}

# ---------------------------------------------------------------------------------------
# escalate

escalate contains msg if {
	action_name in mail_out
	count(external_domains) > 0
	msg := sprintf("%s mails domains outside settings.internal_domains (%s): a person approves it under the gmail-guarded policy (rule external-recipients)", [action_name, concat(", ", sort(external_domains))])
}

escalate contains msg if {
	action_name in mail_out
	not email
	msg := sprintf("%s: AgentGate could not see the recipients, so a person approves it under the gmail-guarded policy (rule recipients-unknown)", [action_name])
}

escalate contains msg if {
	is_gmail
	action_class == "write"
	not action_name in mail_out
	msg := sprintf("%s changes the mailbox: a person approves it under the gmail-guarded policy (rule gmail-write)", [action_name])
}

# ---------------------------------------------------------------------------------------
# allow

allow contains msg if {
	is_gmail
	action_class == "read"
	msg := sprintf("%s is a Gmail read: allowed by the gmail-guarded policy (rule gmail-read)", [action_name])
}

allow contains msg if {
	action_name in mail_out
	email
	count(external_domains) == 0
	msg := sprintf("%s only mails settings.internal_domains (%s): allowed by the gmail-guarded policy (rule internal-recipients)", [action_name, concat(", ", email.domains)])
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
} else := {"effect": "deny", "reasons": [sprintf("%s (class %v) matches no rule of the gmail-guarded policy: denied (rule fail-closed)", [object.get(input, ["action", "name"], "the request"), object.get(input, ["action", "properties", "class"], "missing")])]}

# ---------------------------------------------------------------------------------------
# Consent text: "<agent>: <action> <first outside domain>", at most 64 characters of
# letters, digits, space and +-_.,:# (what CIBA providers accept).

agent_name := name if {
	name := input.subject.properties.name
	is_string(name)
	name != ""
} else := last if {
	parts := split(input.subject.id, "/")
	last := parts[count(parts) - 1]
} else := "agent"

consent_target := sprintf("to %s", [sort(external_domains)[0]]) if {
	count(external_domains) > 0
} else := object.get(input, ["resource", "id"], "")

binding_message := substring(safe_text(sprintf("%s: %s %s", [agent_name, trim_prefix(action_name, "gmail.users."), consent_target])), 0, 64)

binding_chars := "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 +-_.,:#"

safe_text(s) := "" if s == ""

safe_text(s) := concat("", [safe_char(substring(s, i, 1)) | some i in numbers.range(0, count(s) - 1)]) if s != ""

safe_char(c) := c if contains(binding_chars, c)

safe_char(c) := ":" if c == "/"

safe_char(c) := "_" if {
	not contains(binding_chars, c)
	c != "/"
}
