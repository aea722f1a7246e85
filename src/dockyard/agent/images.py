"""Getting images per ``--image-pull-behavior`` (ECS_IMAGE_PULL_BEHAVIOR), one pull per image at a time.

    default        pull; if the pull fails, use the cached image when there is one
    always         pull; a failed pull fails the container
    once           pull unless this agent pulled the image before and it is still cached
    prefer-cached  use the cached image; pull only when there is none

A failure is ``PullError``; the runner reports it as ``CannotPullContainerError: <message>``.
Concurrent requests for one image share one pull (a burst of 50 tasks costs one). Like ECS's agent,
which keeps its own record of the images on the host, an image seen present is not inspected again
for ``prefer-cached`` and ``once``; a create that finds it gone (``ImageMissing``) makes the runner
``forget`` it, so the next task checks (and pulls) again.
"""

from __future__ import annotations

import asyncio

from dockyard.agent.runtime.base import ContainerRuntime, PullBehavior, PullError


class ImagePuller:
    def __init__(self, runtime: ContainerRuntime, behavior: PullBehavior, pulled: set[str]) -> None:
        self.runtime = runtime
        self.behavior = behavior
        self.pulled = pulled  # images this agent pulled (checkpointed, for "once")
        self._inflight: dict[str, asyncio.Future[None]] = {}
        self._present: set[str] = set()  # seen on the engine (prefer-cached, once: no inspect)

    def cached(self, image: str) -> bool:
        """Known to be cached, and that is enough (as ``_get`` would find at once): ``ensure``
        returns without pulling or waiting."""
        return image in self._present and (
            self.behavior is PullBehavior.PREFER_CACHED
            or (self.behavior is PullBehavior.ONCE and image in self.pulled)
        )

    async def ensure(self, image: str) -> None:
        if self.cached(image):
            return  # no pull to share
        fut = self._inflight.get(image)
        if fut is None:
            fut = asyncio.ensure_future(self._get(image))
            self._inflight[image] = fut
            fut.add_done_callback(lambda _: self._inflight.pop(image, None))
        await asyncio.shield(fut)

    def forget(self, image: str) -> None:
        """The image is gone from the engine (a create said so)."""
        self._present.discard(image)

    async def _cached(self, image: str) -> bool:
        if image not in self._present and await self.runtime.image_present(image):
            self._present.add(image)
        return image in self._present

    async def _get(self, image: str) -> None:
        behavior = self.behavior
        if behavior is PullBehavior.PREFER_CACHED and await self._cached(image):
            return
        if behavior is PullBehavior.ONCE and image in self.pulled and await self._cached(image):
            return
        try:
            await self.runtime.pull(image)
        except PullError:
            if behavior is PullBehavior.DEFAULT and await self.runtime.image_present(image):
                return
            raise
        self.pulled.add(image)
        self._present.add(image)
