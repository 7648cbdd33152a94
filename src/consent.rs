//! Gate 4's store and approvers: each consent is bound to one exact request (a digest of
//! method, URL, body and tuple), persisted in SQLite, answered by a person through the local
//! approver (CLI, admin API) or an OpenID CIBA provider ([`ciba`]), and every transition is
//! an audit record and a webhook event.
//!
//! Layout, bottom up: [`config`], [`record`] and [`error`] are leaves; [`store`] keeps
//! records in SQLite; [`ciba`] asks a provider and answers through its [`ciba::Answers`];
//! [`approvals`] holds [`Consents`] (answers, expiry, listing) and [`ask`] is the gate's
//! side of it; [`access`] opens consents for AuthZEN access requests; [`tenants`] keeps
//! one [`Consents`] per tenant.

pub mod access;
pub mod approvals;
pub mod ask;
pub mod ciba;
pub mod config;
pub mod error;
pub mod fleet;
pub mod record;
pub mod store;
pub mod tenants;

pub use approvals::Consents;
pub use ask::{Ask, Granted, NewConsent};
pub use config::{Backend, CibaConfig, ConsentConfig, Delivery, HintFormat, Mode};
pub use error::{AnswerError, ConsentError, Refused};
pub use record::{Answer, Consent, Status};
pub use tenants::TenantConsents;
