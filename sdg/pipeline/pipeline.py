"""A loaded pipeline: its blocks in order, run on one unit's row; the engine's `RunUnit`.

`run` never raises for anything a teacher or a block does (only cancellation propagates): a failing
block is recorded as an error and its rows counted as dropped, so one bad unit cannot end a run.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from sdg.pipeline.blocks import Block, Bound, RunState
from sdg.pipeline.inputs import LEAF_NEED, SCRATCH_PREFIX
from sdg.pipeline.types import RequestError, Row, UnitContext, UnitResult


@dataclass(frozen=True)
class Pipeline:
    name: str
    kind: str  # knowledge | freeform_skill | grounded_skill
    blocks: tuple[Block, ...]
    fingerprint: str  # sha256 over the YAML and every file it uses: a change means "config changed" on resume
    source: Path  # the YAML file
    description: str = ""
    output_columns: frozenset[str] = frozenset()  # every column a kept row has (input columns included)

    def _bound(self, target: int) -> Bound:
        b = Bound(rows=1)
        for block in self.blocks:
            b = block.bound(b, target)
        return b

    @property
    def samples_per_prompt(self) -> int | None:
        """The most samples one generation prompt asks for: the smallest samples_per_call of the blocks that
        ask for the unit's target (None: no such block sets one). A unit may ask for this many at once (the
        leaf scheduler's cap, never below pipeline.samples_per_unit): a prompt is paid once per call, so a
        pipeline with a long prompt (a knowledge chunk) says so by asking for more in each call."""
        from sdg.pipeline.llm_block import TARGET

        calls = [b.samples_per_call for b in self.blocks
                 if getattr(b, "num_samples", None) == TARGET and getattr(b, "samples_per_call", None)]
        return min(calls) if calls else None

    def max_requests_per_unit(self, target: int) -> int:
        """Upper bound of teacher requests for one unit of `target` samples (every sample survives every filter)."""
        return self._bound(max(1, int(target))).requests

    def max_output_tokens_per_unit(self, target: int) -> int:
        """Upper bound of completion tokens: every request uses its block's max_tokens."""
        return self._bound(max(1, int(target))).output_tokens

    async def run(self, row: Row, ctx: UnitContext) -> UnitResult:
        result = UnitResult()
        target = row.get("target_samples")
        if isinstance(target, bool) or not isinstance(target, int) or target < 1:
            result.errors.append(RequestError("pipeline", "bad_row",
                                              f"target_samples must be an int >= 1, got {target!r}"))
            return result
        need = row.get(LEAF_NEED)  # set by the engine: what the unit's leaf still needs (extras count there)
        state = RunState(ctx, result, target, keep=need if isinstance(need, int) and not isinstance(need, bool) else 0)
        rows: list[Row] = [dict(row)]
        for block in self.blocks:
            if not rows:
                break
            try:
                rows = await block.run(rows, state)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - recorded, never raised: the unit ends, the run goes on
                result.errors.append(RequestError(block.name, "block_error", f"{type(e).__name__}: {e}"))
                state.drop(block.name, "block_error", len(rows))
                rows = []
        rows = state.keep_at_most("pipeline", rows, state.keep_limit)
        result.rows = [{k: v for k, v in r.items() if not k.startswith(SCRATCH_PREFIX)} for r in rows]
        return result

    async def __call__(self, row: Row, ctx: UnitContext) -> UnitResult:
        return await self.run(row, ctx)
