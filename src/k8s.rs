//! Running beside agents in Kubernetes: the iptables rules of enforced mode.

pub mod iptables;
