"""`distill`: indiscriminate distillation — every client SFTs on every correct server path.

This is the baseline LaDa's filter has to beat: the same teacher paths, no choice of which.
"""

from fedlada.federation.messages import TeacherPaths
from fedlada.hosts.base import Exchange, Host, RoundContext


class Distill(Host):
    name = "distill"
    lada_host_loss = "replace"  # DARD is the distillation loss; SFT on the paths is its ablation (`lada.loss=sft`)

    def transfer(self, ctx: RoundContext, exchange: Exchange) -> None:
        offer, stats = ctx.server.teacher_paths(ctx.round, exchange.union("down"))
        ctx.record("server", stats)
        requests = {}
        for i, ids in exchange.down.items():
            wanted = set(ids)
            keep = [j for j, (sid, ok) in enumerate(zip(offer.sample_ids, offer.correct)) if ok and sid in wanted]
            requests[i] = TeacherPaths(
                ctx.round, [offer.sample_ids[j] for j in keep], [offer.prompts[j] for j in keep],
                [offer.paths[j] for j in keep], [True] * len(keep),
            )
        ctx.call_all(requests)  # a client that failed just learns nothing this round
