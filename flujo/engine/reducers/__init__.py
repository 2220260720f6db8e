"""The state machine's reducers, one module per concern; ``flujo.engine.machine`` dispatches.

Lowest first (each imports only the ones above it in this list, never the
dispatcher):

- ``batch``: one ``advance`` call's working set (state, plan, the commands it
  produces) and the table of step-kind reducers the dispatcher hands down;
- ``finish``: cancelling steps, succeeding and failing the run;
- ``governor``: usage limits before a launch and after usage is added;
- ``iterations``: the loop-iteration index and forgetting old iterations;
- ``walk``: the tree walk — start a sequence, finish or fail a node — which calls
  a step kind's reducer through the table;
- ``scope``: the template variables visible at a step path, and evaluating an
  expression there;
- ``agent``, ``loop``, ``conditional``, ``fanout`` (parallel and map): what each
  step kind does when it starts and when a body inside it ends;
- ``approval``: waiting for a person, and the answer or the timeout (it
  launches a rejected step's fallback through ``agent``).
"""
