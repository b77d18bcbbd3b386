"""Schedule policies (domain/schedule.py: plan, resume, backfill, trigger, preview) on interval schedules, whose
occurrences the test lists by plain arithmetic. For random downtimes: run_all fires at most max_catchup late
occurrences, run_once one job for the late backlog, skip none; every occurrence from the old next_fire_at to now
has exactly one ledger entry; overlap skip/buffer_one/cancel_other/allow behave as the SPEC says with an
active previous job; jitter is in [0, jitter_seconds) and stable per occurrence; start_at/end_at/max_runs hold
over sequences of plans; a plan is deterministic; resume records unfired occurrences as `paused`; backfill
never fires an occurrence twice."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import datetime, timedelta

from attrs import evolve
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.job import Job, JobSpec, State
from domain.schedule import Fate, Firing, MisfirePolicy, NewId, OverlapPolicy, Schedule, ScheduleSpec
from tests.unit.strategies import T0, downtimes, instants, previous_states, schedule_specs

UNFIRED = {Fate.MISSED, Fate.PAUSED, Fate.COALESCED}


def new_ids(prefix: str = "job") -> NewId:
    counter = itertools.count()
    return lambda _now: f"{prefix}-{next(counter)}"


def occurrences(schedule: Schedule, low: datetime, high: datetime) -> list[datetime]:
    """The schedule's occurrences in [low, high], by arithmetic on its interval."""
    spec = schedule.spec
    anchor, step = spec.start_at or schedule.created_at, timedelta(seconds=spec.interval_seconds or 0)
    end = min(high, spec.end_at) if spec.end_at else high
    k = max(-((anchor - low) // step), 0)  # ceil((low - anchor) / step), never before the anchor
    return list(itertools.takewhile(lambda o: o <= end, (anchor + n * step for n in itertools.count(k))))


def candidates(schedule: Schedule, due: list[datetime], now: datetime) -> list[datetime]:
    """The occurrences the misfire policy lets through, before the overlap policy has its say."""
    horizon = now - timedelta(seconds=schedule.spec.misfire_grace_seconds)
    late, on_time = [o for o in due if o < horizon], [o for o in due if o >= horizon]
    match schedule.spec.misfire_policy:
        case MisfirePolicy.SKIP:
            return on_time
        case MisfirePolicy.RUN_ONCE:
            return ([late[-1]] if late and not on_time else []) + on_time
        case _:
            return late[-schedule.spec.max_catchup:] + on_time


def check_ledger(firing: Firing, due: list[datetime], now: datetime, extra: datetime | None = None) -> None:
    """Each due occurrence is covered by exactly one entry (a range entry covers `count` consecutive ones);
    `extra` is a previously buffered occurrence that may fire now."""
    covered: list[datetime] = []
    for entry in firing.occurrences:
        assert (entry.schedule_id, entry.recorded_at) == (firing.schedule.id, now)
        if entry.scheduled_for == extra and entry.fate is Fate.FIRED:
            continue
        assert entry.count is not None and entry.scheduled_for in due, f"{entry} is not a due occurrence"
        span = due[due.index(entry.scheduled_for):][:entry.count]
        assert len(span) == entry.count and entry.until == (span[-1] if entry.count > 1 else None), entry
        covered += span
    assert sorted(covered) == due and len(set(covered)) == len(covered), "an occurrence has 0 or 2+ entries"
    fired = {(e.job_id, e.scheduled_for) for e in firing.occurrences if e.fate is Fate.FIRED}
    assert fired == {(j.id, j.scheduled_for) for j in firing.jobs}, "fired entries and jobs disagree"


def previous_job(schedule: Schedule, state: str, at: datetime) -> Job | None:
    if state == "none":
        return None
    job = Job.create("previous", schedule.spec.job, now=at, schedule_id=schedule.id, scheduled_for=at)
    running = job.start(worker_id="w", now=at, lease_seconds=30)
    return {"queued": job, "running": running, "done": running.succeed(token=1, now=at)[0]}[state]


@settings(max_examples=200, deadline=None)
@given(case=downtimes(), previous=previous_states)
def test_every_due_occurrence_is_accounted_for_exactly_once(case: tuple[Schedule, datetime], previous: str) -> None:
    schedule, now = case
    due = occurrences(schedule, schedule.next_fire_at, now)
    firing = schedule.plan(now=now, previous=previous_job(schedule, previous, now), new_id=new_ids())
    check_ledger(firing, due, now)
    assert sum(e.count or 0 for e in firing.occurrences) == len(due)
    assert Fate.PAUSED not in {e.fate for e in firing.occurrences}
    assert firing.schedule.next_fire_at == occurrences(schedule, now + timedelta(microseconds=1), now + timedelta(
        seconds=schedule.spec.interval_seconds or 0))[0]


@settings(max_examples=200, deadline=None)
@given(case=downtimes(schedule_specs(overlap=st.just(OverlapPolicy.ALLOW))))
def test_misfire_policies_fire_the_right_late_occurrences(case: tuple[Schedule, datetime]) -> None:
    schedule, now = case
    due = occurrences(schedule, schedule.next_fire_at, now)
    firing = schedule.plan(now=now, previous=None, new_id=new_ids())
    fired = [j.scheduled_for for j in firing.jobs]
    assert fired == candidates(schedule, due, now)
    horizon = now - timedelta(seconds=schedule.spec.misfire_grace_seconds)
    late_fired = [o for o in fired if o < horizon]
    limit = {MisfirePolicy.SKIP: 0, MisfirePolicy.RUN_ONCE: 1, MisfirePolicy.RUN_ALL: schedule.spec.max_catchup}
    assert len(late_fired) <= limit[schedule.spec.misfire_policy]
    if schedule.spec.misfire_policy is MisfirePolicy.RUN_ONCE and any(o < horizon for o in due):
        assert len(late_fired) == 1 or any(o >= horizon for o in due), "a late backlog must fire once"


@settings(max_examples=200, deadline=None)
@given(case=downtimes(), previous=previous_states)
def test_overlap_policies_with_and_without_an_active_previous_job(case: tuple[Schedule, datetime],
                                                                  previous: str) -> None:
    schedule, now = case
    prior = previous_job(schedule, previous, now)
    want = candidates(schedule, occurrences(schedule, schedule.next_fire_at, now), now)
    firing = schedule.plan(now=now, previous=prior, new_id=new_ids())
    fired = [j.scheduled_for for j in firing.jobs]
    fates = {e.scheduled_for: e.fate for e in firing.occurrences if e.fate not in UNFIRED}
    active, policy = prior is not None and not prior.terminal, schedule.spec.overlap_policy
    if policy is OverlapPolicy.ALLOW:
        assert fired == want and firing.cancel_job_ids == ()
    elif policy is OverlapPolicy.CANCEL_OTHER:
        assert fired == want[-1:] and firing.cancel_job_ids == (("previous",) if active and want else ())
    elif policy is OverlapPolicy.SKIP:
        assert fired == ([] if active else want[:1])
    else:
        assert fired == ([] if active else want[:1])
        waiting = want[0] if active and want else (want[1] if len(want) > 1 else None)
        assert firing.schedule.buffered_for == waiting
        assert (firing.schedule.recheck_at is not None) == (waiting is not None)
    assert all(fates[o] is (Fate.FIRED if o in fired else Fate.BUFFERED if o == firing.schedule.buffered_for
                            else Fate.SKIPPED_OVERLAP) for o in want)


@settings(max_examples=200, deadline=None)
@given(case=downtimes(schedule_specs(overlap=st.just(OverlapPolicy.BUFFER_ONE))), wait=st.integers(1, 300))
def test_a_buffered_occurrence_fires_once_when_the_previous_job_ends(case: tuple[Schedule, datetime],
                                                                     wait: int) -> None:
    schedule, now = case
    first = schedule.plan(now=now, previous=previous_job(schedule, "running", now), new_id=new_ids())
    buffered = first.schedule.buffered_for
    later = now + timedelta(seconds=wait * (schedule.spec.interval_seconds or 0) // 7 + 1)
    again = first.schedule.plan(now=later, previous=previous_job(schedule, "done", now), new_id=new_ids("b"))
    due = occurrences(schedule, first.schedule.next_fire_at, later)
    check_ledger(again, due, later, extra=buffered)
    fired = [j.scheduled_for for j in again.jobs]
    assert (buffered in fired) == (buffered is not None) and fired.count(buffered) <= 1
    assert not set(fired) & {j.scheduled_for for j in first.jobs}


@settings(max_examples=200, deadline=None)
@given(case=downtimes(schedule_specs(jitter=st.integers(1, 86400), overlap=st.just(OverlapPolicy.ALLOW))),
       later=st.integers(0, 3600))
def test_jitter_is_below_jitter_seconds_and_stable_per_occurrence(case: tuple[Schedule, datetime], later: int) -> None:
    schedule, now = case
    firing = schedule.plan(now=now, previous=None, new_id=new_ids())
    retried = schedule.plan(now=now + timedelta(seconds=later), previous=None, new_id=new_ids("r"))
    again = {j.scheduled_for: j.run_at for j in retried.jobs}
    for job in firing.jobs:
        assert job.scheduled_for is not None
        delay = job.run_at - job.scheduled_for
        assert timedelta(0) <= delay < timedelta(seconds=schedule.spec.jitter_seconds)
        assert delay == schedule.jitter(job.scheduled_for) == evolve(schedule, version=9).jitter(job.scheduled_for)
        assert again.get(job.scheduled_for, job.run_at) == job.run_at


def anonymous(firing: Firing) -> Firing:
    """The firing with job ids replaced by their rank, so that two plans can be compared."""
    rank = {job.id: f"#{n}" for n, job in enumerate(firing.jobs)}
    return evolve(firing, jobs=tuple(evolve(j, id=rank[j.id]) for j in firing.jobs),
                  occurrences=tuple(evolve(e, job_id=rank.get(e.job_id or "", e.job_id)) for e in firing.occurrences),
                  schedule=evolve(firing.schedule, last_job_id=rank.get(firing.schedule.last_job_id or "")))


@settings(max_examples=200, deadline=None)
@given(case=downtimes(schedule_specs(jitter=st.sampled_from([0, 30]))), previous=previous_states)
def test_a_plan_is_deterministic_so_a_retried_tick_is_safe(case: tuple[Schedule, datetime], previous: str) -> None:
    schedule, now = case
    prior = previous_job(schedule, previous, now)
    one = schedule.plan(now=now, previous=prior, new_id=new_ids("a"))
    two = schedule.plan(now=now, previous=prior, new_id=new_ids("b"))
    assert anonymous(one) == anonymous(two)


def ticks(schedule: Schedule, times: list[datetime], finishes: list[bool]) -> Iterator[tuple[Firing, datetime]]:
    """Plan at each time, the previous job finishing (or not) before the next tick."""
    previous: Job | None = None
    for now, finished in zip(times, itertools.cycle(finishes or [True]), strict=False):
        firing = schedule.plan(now=now, previous=previous, new_id=new_ids(f"t{now.timestamp()}"))
        yield firing, now
        schedule = firing.schedule
        if firing.jobs:
            previous = previous_job(schedule, "running", now)
        if previous is not None and finished:
            previous = previous_job(schedule, "done", now)


@settings(max_examples=200, deadline=None)
@given(spec=schedule_specs(interval=st.integers(1, 600), max_runs=st.none() | st.integers(1, 8)),
       start=st.none() | st.integers(0, 3000), length=st.none() | st.integers(1, 6000),
       gaps=st.lists(st.integers(0, 80), min_size=1, max_size=25), finishes=st.lists(st.booleans(), max_size=5))
def test_start_end_and_max_runs_hold_over_a_sequence_of_plans(spec: ScheduleSpec, start: int | None,
                                                              length: int | None, gaps: list[int],
                                                              finishes: list[bool]) -> None:
    start_at = None if start is None else T0 + timedelta(seconds=start)
    end_at = None if length is None else (start_at or T0) + timedelta(seconds=length)
    schedule = Schedule.create("s", evolve(spec, start_at=start_at, end_at=end_at), now=T0)
    step = spec.interval_seconds or 0  # ticks 0 to 20 intervals apart, on and off the grid
    times = list(itertools.accumulate((timedelta(seconds=g * step // 4 + g % 3) for g in gaps), initial=T0))[1:]
    fired: list[datetime] = []
    for firing, _now in ticks(schedule, times, finishes):
        fired += [j.scheduled_for for j in firing.jobs]
        schedule = firing.schedule
        assert schedule.fired_count == len(fired)
    allowed = set(occurrences(schedule, T0, times[-1]))
    assert set(fired) <= allowed and len(set(fired)) == len(fired), "fired outside the rule, or twice"
    if spec.max_runs is not None:
        assert len(fired) <= spec.max_runs
        if schedule.next_fire_at is None and end_at is None:
            assert len(fired) == spec.max_runs, "the schedule stopped before max_runs fires"


@settings(max_examples=200, deadline=None)
@given(case=downtimes(), paused_for=st.integers(0, 300), previous=previous_states)
def test_resume_records_unfired_occurrences_as_paused(case: tuple[Schedule, datetime], paused_for: int,
                                                      previous: str) -> None:
    schedule, now = case
    paused = schedule.pause(now=T0, note="maintenance")
    during = paused.plan(now=now, previous=None, new_id=new_ids())
    assert (during.jobs, during.occurrences, during.schedule) == ((), (), paused)
    resumed_at = now + timedelta(seconds=paused_for)
    firing = paused.resume(now=resumed_at, previous=previous_job(schedule, previous, T0), new_id=new_ids())
    due = occurrences(schedule, schedule.next_fire_at, resumed_at)
    check_ledger(firing, due, resumed_at)
    unfired = [e for e in firing.occurrences if e.fate in UNFIRED]
    folded = Fate.COALESCED if schedule.spec.misfire_policy is MisfirePolicy.RUN_ONCE else Fate.PAUSED
    assert all(e.fate in (Fate.PAUSED, folded) for e in unfired), "an occurrence of the pause was not `paused`"
    through = set(candidates(schedule, due, resumed_at))
    assert sum(e.count or 0 for e in unfired) == len([o for o in due if o not in through])
    assert not firing.schedule.paused


@settings(max_examples=200, deadline=None)
@given(case=downtimes(), until=st.integers(1, 300), extra=st.integers(0, 1000))
def test_a_pause_with_an_end_resumes_itself(case: tuple[Schedule, datetime], until: int, extra: int) -> None:
    schedule, _now = case
    end = T0 + timedelta(seconds=until * (schedule.spec.interval_seconds or 0))
    paused = schedule.pause(now=T0, until=end)
    assert paused.due_at == end
    assert paused.plan(now=end - timedelta(microseconds=1), previous=None, new_id=new_ids()).schedule == paused
    now = end + timedelta(seconds=extra)
    auto = paused.plan(now=now, previous=None, new_id=new_ids())
    assert anonymous(auto) == anonymous(paused.resume(now=now, previous=None, new_id=new_ids("r")))


@settings(max_examples=200, deadline=None)
@given(case=downtimes(), span=st.integers(0, 200), done=st.sets(st.integers(0, 200), max_size=50))
def test_backfill_fires_each_missing_occurrence_once(case: tuple[Schedule, datetime], span: int,
                                                     done: set[int]) -> None:
    schedule, now = case
    step = timedelta(seconds=schedule.spec.interval_seconds or 0)
    start, end = T0 + step / 3, min(T0 + step / 3 + span * step, now)
    if start > end:
        return
    want = occurrences(schedule, start, end)
    already = {want[i] for i in done if i < len(want)}
    firing = schedule.backfill(start=start, end=end, already=already, now=now, new_id=new_ids())
    fired = [j.scheduled_for for j in firing.jobs]
    assert fired == [o for o in want if o not in already]
    again = firing.schedule.backfill(start=start, end=end, already=already | set(fired), now=now, new_id=new_ids())
    assert again.jobs == ()


@settings(max_examples=200, deadline=None)
@given(case=downtimes(schedule_specs(max_runs=st.none() | st.integers(1, 5))), count=st.integers(0, 50),
       after=instants(T0 - timedelta(days=1), T0 + timedelta(days=30)))
def test_preview_lists_the_next_fire_times(case: tuple[Schedule, datetime], count: int, after: datetime) -> None:
    schedule, _now = case
    times = schedule.preview(count, after=after)
    left = count if schedule.spec.max_runs is None else min(count, schedule.spec.max_runs - schedule.fired_count)
    step = timedelta(seconds=schedule.spec.interval_seconds or 0)
    low = max(after + timedelta(microseconds=1), schedule.next_fire_at)
    assert times == occurrences(schedule, low, low + (count + 1) * step)[:left]


@settings(max_examples=200, deadline=None)
@given(case=downtimes(schedule_specs(jitter=st.sampled_from([0, 60]))))
def test_trigger_fires_one_job_now_outside_the_rule(case: tuple[Schedule, datetime]) -> None:
    schedule, now = case
    firing = schedule.trigger(now=now, new_id=new_ids())
    (job,) = firing.jobs
    assert (job.scheduled_for, job.run_at, job.state) == (now, now, State.QUEUED)
    assert (firing.schedule.next_fire_at, firing.schedule.fired_count) == (schedule.next_fire_at, 0)
    assert [(e.fate, e.job_id) for e in firing.occurrences] == [(Fate.FIRED, job.id)]


@settings(max_examples=200, deadline=None)
@given(every=st.sampled_from([1, 2, 5, 15, 30]), start=st.integers(0, 120), end=st.integers(1, 120),
       lead=st.integers(0, 60), done=st.sets(st.integers(0, 50), max_size=10))
def test_backfill_never_fires_outside_start_at_and_end_at(every: int, start: int, end: int, lead: int,
                                                          done: set[int]) -> None:
    """A cron schedule (in UTC: occurrences are the minutes divisible by `every`) with a start and an end."""
    start_at = T0 + timedelta(minutes=start)
    spec = ScheduleSpec(name="cron", job=JobSpec(task="noop"), cron=f"*/{every} * * * *",
                        start_at=start_at, end_at=start_at + timedelta(minutes=end))
    schedule = Schedule.create("c", spec, now=T0)
    low, high = start_at - timedelta(minutes=lead), start_at + timedelta(minutes=end + lead)
    minutes = range(int((low - T0).total_seconds() // 60), int((high - T0).total_seconds() // 60) + 1)
    want = [T0 + timedelta(minutes=m) for m in minutes if m % every == 0 and start <= m <= start + end]
    already = {want[i] for i in done if i < len(want)}
    firing = schedule.backfill(start=low, end=high, already=already, now=high, new_id=new_ids())
    assert [j.scheduled_for for j in firing.jobs] == [o for o in want if o not in already]
