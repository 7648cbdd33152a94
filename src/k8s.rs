//! Kubernetes: put AgentGate next to an agent's pod.
//!
//! [`inject`] rewrites workload manifests (what `agentgate k8s inject` and `uninject` run):
//! it adds the `agentgate` native sidecar, in enforced mode the `agentgate-iptables` init
//! container, their volumes, and the agent containers' CA trust (and proxy) variables.
//! [`iptables`] is what that init container runs: the rules of enforced mode.

pub mod inject;
pub mod iptables;
