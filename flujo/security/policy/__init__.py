"""The security policy: what pipelines and agents are allowed to do.

Why a policy at all: a pipeline file is code written by someone who may not
be trusted with the machine that runs it (a teammate's pull request, a
tenant of a shared cluster).  The schema bounds what is *expressible*; the
policy bounds what is *allowed here*, and is set by whoever operates the
runtime — the developer for ``flujo run``, the cluster administrator for the
operator.  One model serves both, with two sets of defaults
(:meth:`SecurityPolicy.embedded`, :meth:`SecurityPolicy.cluster`).

What it decides, and where:

- at **validation** (``flujo validate``, ``Flujo(...)``, the operator's
  admission of Pipelines and runs): agent types, Python callables, endpoint
  URLs checked *statically* (scheme, host globs, literal addresses, cloud
  metadata names), credential file locations, and the bounds on retries,
  loop iterations, parallel branches and map items —
  :func:`check_pipeline_policy`, :func:`check_agent_policy`;
- when a remote agent is **built**: the endpoint again, this time with its
  host *resolved* (``socket.getaddrinfo``) so a name pointing at a metadata,
  loopback or private address is refused — :func:`endpoint_problems`, called
  by :mod:`flujo.agents.transport` under the policy made active with
  :func:`use_policy`;
- on **data**: the run's input and every agent's output against size caps,
  and text against UTF-8 validity — :func:`check_input`, :func:`check_output`,
  :class:`OutputGuard`.

Where each part lives (this package re-exports them all):

- :mod:`~flujo.security.policy.model` — the fields, the two profiles, a
  policy file's shape, :class:`PolicyError` and :class:`PolicyViolation`;
- :mod:`~flujo.security.policy.loading` — :func:`load_policy`,
  :func:`policy_from_env` and the ``FLUJO_SECURITY_*`` variables;
- :mod:`~flujo.security.policy.endpoints` — URLs, hosts and addresses;
- :mod:`~flujo.security.policy.findings` — an Agent's or a Pipeline's problems;
- :mod:`~flujo.security.policy.data` — input and output size caps;
- :mod:`~flujo.security.policy.enforcement` — the active policy and
  :class:`OutputGuard`.

Known limit (documented in ``docs/security.md``): a name is resolved when
the agent is built and again, independently, when the HTTP client connects.
A DNS server that answers differently the second time (DNS rebinding) is not
stopped here; in the cluster the chart's egress NetworkPolicy is the control
that holds regardless of DNS.
"""

from flujo.security.policy.data import (
    MAX_DATA_DEPTH,
    check_input,
    check_output,
    enforce_input,
    parse_input,
)
from flujo.security.policy.endpoints import (
    ALWAYS_DENIED_NETWORKS,
    LOOPBACK_NETWORKS,
    METADATA_HOSTS,
    PRIVATE_NETWORKS,
    IPAddress,
    Resolver,
    endpoint_problems,
)
from flujo.security.policy.enforcement import OutputGuard, active_policy, use_policy
from flujo.security.policy.findings import (
    agent_policy_findings,
    check_agent_policy,
    check_pipeline_policy,
    credential_file_problems,
)
from flujo.security.policy.loading import (
    FIELD_ENV_PREFIX,
    POLICY_ENV,
    PROFILE_ENV,
    load_policy,
    policy_from_env,
)
from flujo.security.policy.model import (
    PolicyConfig,
    PolicyError,
    PolicyOverrides,
    PolicyViolation,
    Profile,
    SecurityPolicy,
)

__all__ = [
    "ALWAYS_DENIED_NETWORKS",
    "FIELD_ENV_PREFIX",
    "LOOPBACK_NETWORKS",
    "MAX_DATA_DEPTH",
    "METADATA_HOSTS",
    "POLICY_ENV",
    "PRIVATE_NETWORKS",
    "PROFILE_ENV",
    "IPAddress",
    "OutputGuard",
    "PolicyConfig",
    "PolicyError",
    "PolicyOverrides",
    "PolicyViolation",
    "Profile",
    "Resolver",
    "SecurityPolicy",
    "active_policy",
    "agent_policy_findings",
    "check_agent_policy",
    "check_input",
    "check_output",
    "check_pipeline_policy",
    "credential_file_problems",
    "endpoint_problems",
    "enforce_input",
    "load_policy",
    "parse_input",
    "policy_from_env",
    "use_policy",
]
