"""The agent ``claimcheck bench`` runs whole workflows with: K tool steps, then a verified claim.

Its artifact says how many steps: each creates a ticket through the runtime (a permission
check, the tool host, the evidence), and the final claim cites every ticket, so the
workflow completes only if each step really succeeded. No model is asked: the bench
measures the bus, not a model.
"""

from __future__ import annotations

from agents import Agent, Context, ScriptedModel

worker = Agent("bench", model=lambda: ScriptedModel([]), system_prompt="The bench's worker.")


@worker.task("bench_workflow")
async def bench_workflow(ctx: Context) -> None:
    steps = int(ctx.artifact_json()["steps"])
    evidence = []
    for step in range(steps):
        reply = await ctx.tools.create_ticket(
            customer=f"bench-{step}", title=f"step {step}", severity="low"
        )
        evidence.append(reply.evidence)
    await ctx.summarize(f"{steps} tickets created", evidence=evidence)


@worker.task("bench_handoff")
async def bench_handoff(ctx: Context) -> None:
    """A handoff's whole path and one step: the handoff end-to-end row."""
    await ctx.checkpoint("handled")
