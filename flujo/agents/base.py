"""The agent protocol under the import path agents were written against.

The protocol itself lives in :mod:`flujo.domain.agent`, below the layers that
wrap agents (resilience, security) and the ones that build them (this
package): a type two layers need lives below both.
"""

from flujo.domain.agent import Agent, AgentContext, AgentOutput, BaseAgent, CallableAgent, as_agent

__all__ = ["Agent", "AgentContext", "AgentOutput", "BaseAgent", "CallableAgent", "as_agent"]
