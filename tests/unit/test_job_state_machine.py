"""The job state machine (SPEC §2): random event sequences, with time moving forward and fencing tokens that
are sometimes stale, are accepted exactly when the SPEC allows them. An accepted step follows NEXT and bumps
`version` by one (a heartbeat extends the lease and nothing else); a refused one raises IllegalTransition or
LeaseLost and changes nothing. Terminal states are left only by retry_now, `attempt` never exceeds
`max_attempts`, claim tokens only grow, and every ended attempt yields its Run."""

from __future__ import annotations

import copy
import itertools
from datetime import datetime, timedelta
from typing import Any

from attrs import evolve, frozen
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from domain.errors import IllegalTransition, LeaseLost
from domain.job import NEXT, TERMINAL, WAITING, Job, Outcome, Run, State
from tests.unit.strategies import instants, job_specs

EVENTS = ("promote", "start", "renew", "succeed", "fail", "fail_permanent", "lose", "release", "cancel",
          "retry_now")
FENCED = frozenset({"renew", "succeed", "fail", "fail_permanent", "release"})
LEASE_SECONDS = (1.0, 5.0, 30.0)


@frozen
class Step:
    event: str
    advance: timedelta | None  # None: move to the exact expiry of the current lease
    token: str  # "current", "stale" (an earlier claim's), or "forged"
    lease_seconds: float
    outcome: Outcome = Outcome.FAILED


advances = st.one_of(st.none(), st.integers(0, 70).map(lambda s: timedelta(seconds=s)),
                     st.integers(0, 10**6).map(lambda us: timedelta(microseconds=us)))
steps = st.builds(Step, event=st.sampled_from(EVENTS), advance=advances,
                  token=st.sampled_from(["current", "current", "stale", "forged"]),
                  lease_seconds=st.sampled_from(LEASE_SECONDS),
                  outcome=st.sampled_from([Outcome.FAILED, Outcome.TIMEOUT]))


def allowed(job: Job, event: str, token: int, now: datetime) -> bool:
    """The SPEC's rules, written out independently of the code under test."""
    lease = job.lease
    holds = job.state is State.RUNNING and lease is not None and lease.token == token and lease.expires_at > now
    rules = {
        "promote": job.state in WAITING and job.run_at <= now,
        "start": job.state is State.QUEUED,
        "lose": job.state is State.RUNNING and lease is not None and lease.expires_at <= now,
        "cancel": job.state not in TERMINAL,
        "retry_now": job.state in (State.FAILED, State.CANCELLED),
    }
    return holds if event in FENCED else rules[event]


def perform(job: Job, step: Step, token: int, now: datetime) -> tuple[Job, Run | None]:
    worker = f"worker-{job.version}"
    match step.event:
        case "promote":
            return job.promote(now=now), None
        case "start":
            return job.start(worker_id=worker, now=now, lease_seconds=step.lease_seconds), None
        case "renew":
            return job.renew(token=token, now=now, lease_seconds=step.lease_seconds), None
        case "succeed":
            return job.succeed(token=token, now=now, result={"ok": True})
        case "fail":
            return job.fail(token=token, now=now, error="boom", outcome=step.outcome)
        case "fail_permanent":
            return job.fail(token=token, now=now, error="bad input", permanent=True)
        case "lose":
            return job.lose(now=now)
        case "release":
            return job.release(token=token, now=now), None
        case "cancel":
            return job.cancel(now=now)
        case _:
            return job.retry_now(now=now), None


class World:
    """A job, the clock, and every fencing token a claim has handed out so far."""

    def __init__(self, job: Job, now: datetime) -> None:
        self.job, self.now = job, now
        self.tokens: list[int] = []
        self.runs: list[Run] = []
        self.forged = itertools.count(10**6)

    def token(self, pick: str) -> int:
        current = self.job.lease.token if self.job.lease else None
        stale = [t for t in self.tokens if t != current]
        if pick == "current" and current is not None:
            return current
        if pick == "stale" and stale:
            return stale[len(stale) // 2]
        return next(self.forged)

    def apply(self, step: Step) -> None:
        lease = self.job.lease
        if step.advance is not None:
            self.now += step.advance
        elif lease is not None and lease.expires_at > self.now:
            self.now = lease.expires_at
        before, token = self.job, self.token(step.token)
        snapshot, legal = copy.deepcopy(before), allowed(before, step.event, token, self.now)
        try:
            after, run = perform(before, step, token, self.now)
        except (IllegalTransition, LeaseLost) as refused:
            assert not legal, f"{step.event} refused from {before.state} at {self.now}: {refused}"
            assert isinstance(refused, LeaseLost if step.event in FENCED else IllegalTransition)
            assert before == snapshot, "a refused step changed the job"
            return
        assert legal, f"{step.event} accepted from {before.state} (token {token}) at {self.now}"
        check_step(before, after, run, step, self.now, self.tokens)
        if step.event == "start":
            self.tokens.append(after.lease.token)
        self.runs += [run] if run else []
        self.job = after


def check_step(before: Job, after: Job, run: Run | None, step: Step, now: datetime, tokens: list[int]) -> None:
    if step.event == "renew":
        assert after == evolve(before, lease=evolve(before.lease, expires_at=now + timedelta(
            seconds=step.lease_seconds))), "a heartbeat changes the lease expiry and nothing else"
        return
    assert after.state in NEXT[before.state], f"{before.state} -> {after.state} is not in NEXT"
    assert after.version == before.version + 1
    assert after.updated_at == now
    assert not before.terminal or step.event == "retry_now", "left a terminal state"
    check_attempts(before, after, step, tokens)
    check_run(before, after, run, step, now)


def check_attempts(before: Job, after: Job, step: Step, tokens: list[int]) -> None:
    if step.event == "start":
        assert after.attempt == before.attempt + 1
        assert all(after.lease.token > t for t in tokens), "a claim token did not grow"
    elif step.event == "release":
        assert (after.state, after.attempt, after.run_at) == (State.RETRY, before.attempt - 1, after.updated_at)
    elif step.event == "retry_now":
        assert after.state is State.QUEUED and after.attempt < after.max_attempts
    else:
        assert after.attempt == before.attempt
    if step.event in ("fail", "lose"):
        out_of_attempts = before.attempt >= before.max_attempts
        assert after.state is (State.FAILED if out_of_attempts else State.RETRY)
        if after.state is State.RETRY:
            ceiling = before.backoff.ceiling(before.attempt)
            assert timedelta(seconds=ceiling / 2) <= after.run_at - after.updated_at <= timedelta(seconds=ceiling)
    if step.event == "fail_permanent":
        assert after.state is State.FAILED


def check_run(before: Job, after: Job, run: Run | None, step: Step, now: datetime) -> None:
    outcomes: dict[str, Any] = {"succeed": Outcome.SUCCEEDED, "fail": step.outcome, "fail_permanent": Outcome.FAILED,
                                "lose": Outcome.LOST}
    if step.event == "cancel" and before.state is State.RUNNING:
        outcomes["cancel"] = Outcome.CANCELLED
    if step.event not in outcomes:
        assert run is None, f"{step.event} from {before.state} produced a run"
        return
    assert run is not None and before.lease is not None
    assert (run.job_id, run.attempt, run.outcome) == (before.id, before.attempt, outcomes[step.event])
    assert (run.worker_id, run.started_at, run.finished_at) == (before.lease.worker_id, before.started_at, now)
    assert run.duration_seconds >= 0


def check_invariants(job: Job) -> None:
    assert 0 <= job.attempt <= job.max_attempts
    assert (job.state is State.RUNNING) == (job.lease is not None)
    assert job.version >= 0


@st.composite
def worlds(draw: st.DrawFn) -> World:
    now = draw(instants())
    delay = draw(st.sampled_from([None, timedelta(0), timedelta(seconds=5), timedelta(hours=1)]))
    spec = draw(job_specs(run_at=st.just(None if delay is None else now + delay)))
    return World(Job.create("job-1", spec, now=now), now)


@settings(max_examples=200, deadline=None)
@given(world=worlds(), events=st.lists(steps, max_size=60))
def test_random_event_sequences_follow_the_spec(world: World, events: list[Step]) -> None:
    for step in events:
        world.apply(step)
        check_invariants(world.job)


@settings(max_examples=200, deadline=None)
@given(world=worlds(), events=st.lists(steps, max_size=30), probes=st.lists(steps, min_size=1, max_size=10))
def test_a_stale_or_expired_token_is_always_refused(world: World, events: list[Step], probes: list[Step]) -> None:
    for step in events:
        world.apply(step)
    for probe in probes:
        job, now = world.job, world.now + (probe.advance or timedelta(0))
        lease = job.lease
        for token in {*world.tokens, 10**9}:
            if lease is not None and token == lease.token and lease.expires_at > now:
                continue
            for event in sorted(FENCED):
                try:
                    perform(job, evolve(probe, event=event), token, now)
                except LeaseLost:
                    continue
                raise AssertionError(f"{event} with token {token} accepted: lease {lease} at {now}")


class JobMachine(RuleBasedStateMachine):
    """The same rules, driven by hypothesis' stateful engine (it shrinks to the shortest bad history)."""

    @initialize(world=worlds())
    def setup(self, world: World) -> None:
        self.world = world

    def _do(self, event: str, advance: timedelta | None, token: str, lease: float) -> None:
        self.world.apply(Step(event=event, advance=advance, token=token, lease_seconds=lease))

    @rule(advance=advances, lease=st.sampled_from(LEASE_SECONDS))
    def promote(self, advance: timedelta | None, lease: float) -> None:
        self._do("promote", advance, "current", lease)

    @rule(advance=advances, lease=st.sampled_from(LEASE_SECONDS))
    def start(self, advance: timedelta | None, lease: float) -> None:
        self._do("start", advance, "current", lease)

    @rule(event=st.sampled_from(sorted(FENCED)), advance=advances, token=st.sampled_from(["current", "stale"]),
          lease=st.sampled_from(LEASE_SECONDS))
    def worker_writes(self, event: str, advance: timedelta | None, token: str, lease: float) -> None:
        self._do(event, advance, token, lease)

    @rule(event=st.sampled_from(["lose", "cancel", "retry_now"]), advance=advances)
    def operator_or_reaper(self, event: str, advance: timedelta | None) -> None:
        self._do(event, advance, "current", 30.0)

    @invariant()
    def attempts_and_lease_agree(self) -> None:
        if hasattr(self, "world"):
            check_invariants(self.world.job)

    @invariant()
    def runs_number_the_attempts(self) -> None:
        if hasattr(self, "world"):
            attempts = [r.attempt for r in self.world.runs]
            assert all(1 <= a <= self.world.job.max_attempts for a in attempts)


JobMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=25, deadline=None)
test_job_machine = JobMachine.TestCase

