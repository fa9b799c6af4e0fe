"""`@serve.batch` on async generators (issue 14, item 13): each caller of a batch streams
its own items, `StopIteration` ends one caller's stream while the others go on, an error
reaches every caller after its items, a caller that leaves is dropped (and the batch's
generator closed once nobody listens); and Ray's option validation (an int-valued float
is accepted). No processes: the decorator on a plain event loop."""

from __future__ import annotations

import asyncio

import pytest

import serve

pytestmark = pytest.mark.timeout(30)


class Model:
    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.closed = 0

    @serve.batch(max_batch_size=4.0, batch_wait_timeout_s=0.05)  # an int-valued float: accepted
    async def count_to(self, limits: list[int]):
        self.batches.append(list(limits))
        try:
            for i in range(max(limits)):
                yield [i if i < n else StopIteration for n in limits]
        finally:
            self.closed += 1

    @serve.batch(max_batch_size=4, batch_wait_timeout_s=0.05)
    async def failing(self, xs: list[int]):
        yield [x * 10 for x in xs]
        raise KeyError("the model broke")

    @serve.batch(max_batch_size=4, batch_wait_timeout_s=0.05)
    async def wrong_length(self, xs: list[int]):
        yield xs[:-1]

    @serve.batch(max_batch_size=4, batch_wait_timeout_s=0.05)
    async def endless(self, xs: list[int]):
        try:
            while True:
                yield xs
                await asyncio.sleep(0)
        finally:
            self.closed += 1


async def _all(agen) -> list:
    return [x async for x in agen]


def test_each_caller_streams_its_own_items() -> None:
    async def main() -> None:
        m = Model()
        results = await asyncio.gather(*(_all(m.count_to(n)) for n in (3, 1, 4)))
        assert results == [[0, 1, 2], [0], [0, 1, 2, 3]]
        assert m.batches == [[3, 1, 4]] and m.closed == 1
        assert type(m).count_to.__name__ == "count_to"

    asyncio.run(main())


def test_an_error_reaches_every_caller_after_its_items() -> None:
    async def main() -> None:
        m = Model()

        async def one(x: int) -> tuple[list, str]:
            got = []
            try:
                async for item in m.failing(x):
                    got.append(item)
            except KeyError as e:
                return got, str(e)
            return got, "no error"

        assert await asyncio.gather(one(1), one(2)) == [([10], "'the model broke'"), ([20], "'the model broke'")]

    asyncio.run(main())


def test_a_list_of_the_wrong_length_fails_every_caller() -> None:
    async def main() -> None:
        m = Model()
        for outcome in await asyncio.gather(_all(m.wrong_length(1)), _all(m.wrong_length(2)),
                                            return_exceptions=True):
            assert isinstance(outcome, ValueError) and "one result per input" in str(outcome)

    asyncio.run(main())


def test_a_caller_that_leaves_is_dropped_and_the_last_closes_the_generator() -> None:
    async def main() -> None:
        m = Model()
        a, b = m.endless(1), m.endless(2)
        first = await asyncio.gather(a.__anext__(), b.__anext__())
        assert first == [1, 2]
        await a.aclose()
        assert [await b.__anext__() for _ in range(3)] == [2, 2, 2]  # the other goes on
        await b.aclose()
        for _ in range(200):  # the batch's generator sees nobody listens at its next yield
            if m.closed:
                break
            await asyncio.sleep(0.005)
        assert m.closed == 1

    asyncio.run(main())


@pytest.mark.parametrize(("value", "error"), [(2.5, TypeError), (0.0, ValueError), (True, TypeError)])
def test_max_batch_size_validation_as_ray(value: object, error: type) -> None:
    with pytest.raises(error, match="max_batch_size"):
        serve.batch(max_batch_size=value)  # type: ignore[arg-type]


def test_a_sync_generator_is_refused() -> None:
    with pytest.raises(TypeError, match="async generators only"):
        @serve.batch
        def gen(xs):
            yield xs


def test_set_max_batch_size_takes_an_int_valued_float() -> None:
    async def main() -> None:
        m = Model()
        Model.count_to.set_max_batch_size(2.0)
        try:
            results = await asyncio.gather(*(_all(m.count_to(n)) for n in (1, 1, 1)))
            assert results == [[0], [0], [0]]
            assert sorted(len(b) for b in m.batches) == [1, 2]
        finally:
            Model.count_to.set_max_batch_size(4)

    asyncio.run(main())
