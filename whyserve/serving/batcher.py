"""Batching for servers that hand over one request at a time (kserve does): the requests that
arrive together go through ``ExplainService`` as one batch, one forward pass, as TorchServe's
batchSize / maxBatchDelay do."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from whyserve.serving import envelopes
from whyserve.serving.protocol import ServingError
from whyserve.serving.service import ExplainService, Reply


class Batcher:
    """Collects the requests that arrive within ``delay_s`` (up to ``max_size``) and runs them
    through ``service.handle`` as one batch on one worker thread, the way TorchServe batches."""

    def __init__(self, service: ExplainService, max_size: int = 8, delay_s: float = 0.01) -> None:
        self.service, self.max_size, self.delay_s = service, max_size, delay_s
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None  # referenced, so the loop cannot drop it
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="whyserve")

    async def submit(self, requests: list[envelopes.Fields | ServingError]) -> list[Reply]:
        """One reply per request, once the batch that took them has run."""
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._task = asyncio.get_running_loop().create_task(self._run())
        future = asyncio.get_running_loop().create_future()
        await self._queue.put((requests, future))
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = loop.time() + self.delay_s
            while sum(len(requests) for requests, _ in batch) < self.max_size and loop.time() < deadline:
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), deadline - loop.time()))
                except asyncio.TimeoutError:
                    break
            flat = [request for requests, _ in batch for request in requests]
            try:
                replies = await loop.run_in_executor(self._executor, envelopes.answer, self.service, flat)
            except Exception as error:  # noqa: BLE001 - answer() catches per request; this is a bug
                for _, future in batch:
                    future.set_exception(error)
                continue
            start = 0
            for requests, future in batch:
                future.set_result(replies[start : start + len(requests)])
                start += len(requests)
