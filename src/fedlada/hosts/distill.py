"""`distill`: indiscriminate distillation — every client SFTs on every correct server path.

This is the baseline LaDa's filter has to beat: the same teacher paths, no choice of which.
"""

from fedlada.federation.messages import TeacherPaths
from fedlada.hosts.base import Host, RoundContext


class Distill(Host):
    name = "distill"

    def exchange(self, ctx: RoundContext) -> None:
        pool = ctx.server.candidate_pool(ctx.round)
        offer, stats = ctx.server.teacher_paths(ctx.round, pool)
        ctx.record("server", stats)
        keep = [i for i, ok in enumerate(offer.correct) if ok]
        correct_only = TeacherPaths(
            ctx.round, [offer.sample_ids[i] for i in keep], [offer.prompts[i] for i in keep],
            [offer.paths[i] for i in keep], [True] * len(keep),
        )
        for i in ctx.active_clients():
            ctx.call(i, correct_only)  # None if the client failed: it just learns nothing this round
