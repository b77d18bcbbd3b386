"""Every /ui page rendered with data: what a person reads there, escaped, and the errors a page can show."""

from __future__ import annotations

import re
from datetime import timedelta

from tests.unit.http_support import T0, create_schedule
from tests.unit.ui_support import add, finished, running, running_ui


def rows(html: str) -> int:
    body = html.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    return body.count("<tr>") - body.count('class="empty"')


async def test_overview_shows_each_queue_by_state_with_throughput_and_the_oldest_waiting_job() -> None:
    async with running_ui() as (api, _):
        for minutes in (50, 20, 20, 1):
            finished(api, queue="mail", at=T0 - timedelta(minutes=minutes))
        finished(api, queue="mail", ok=False, at=T0 - timedelta(minutes=2))
        finished(api, queue="mail", at=T0 - timedelta(hours=3))  # outside the hour: not in the chart
        add(api, queue="reports", at=T0 - timedelta(minutes=7))  # queued 7 min ago
        running(api, queue="reports")
        html = (await api.client.get("/ui")).text
        assert re.search(r'<span class="n">5</span><span class="k">succeeded</span>', html)
        assert re.search(r'<span class="n">7 min</span><span class="k">oldest waiting</span>', html)
        assert 'href="/ui/jobs?queue=mail&amp;state=failed">1</a>' in html
        assert "4 succeeded" in html and "1 failed" in html  # the chart's legend covers the last hour only
        big_chart = html.split('aria-label="all queues', 1)[1].split("</svg>", 1)[0]
        assert big_chart.count("<rect") == 4  # 3 minutes with successes, 1 with a failure
        assert "2 succeeded" in big_chart  # two in the same minute share a bar
        assert ">reports</strong>" in html and ">mail</strong>" in html


async def test_overview_without_jobs_says_how_to_start() -> None:
    async with running_ui() as (api, _):
        html = (await api.client.get("/ui")).text
        assert "No jobs yet" in html and "<rect" not in html


async def test_jobs_page_filters_pages_by_keyset_and_finds_a_job_by_id() -> None:
    async with running_ui() as (api, _):
        made = [add(api, task="email", queue="mail", at=T0 + timedelta(milliseconds=i)) for i in range(60)]
        other = add(api, task="report", queue="reports", at=T0 + timedelta(seconds=1))
        first = await api.client.get("/ui/jobs?queue=mail")
        assert rows(first.text) == 50 and made[-1].id[-12:] in first.text and other.id[-12:] not in first.text
        older = re.search(r'href="/ui/jobs(\?[^"]*cursor=[^"]+)">Older', first.text)
        assert older and "queue=mail" in older.group(1)
        second = await api.client.get("/ui/jobs" + older.group(1).replace("&amp;", "&"))
        assert rows(second.text) == 10 and made[0].id[-12:] in second.text and "Older" not in second.text
        by_task = await api.client.get("/ui/jobs?task=report&state=queued")
        assert rows(by_task.text) == 1 and 'value="report"' in by_task.text
        found = await api.client.get(f"/ui/jobs?id={other.id.upper()}", follow_redirects=False)
        assert found.status_code == 303 and found.headers["location"] == f"/ui/jobs/{other.id}"
        missing = await api.client.get("/ui/jobs?id=hello")
        assert "&#39;hello&#39; is not a job id" in missing.text


async def test_a_bad_filter_is_a_page_that_says_which_field() -> None:
    async with running_ui() as (api, _):
        response = await api.client.get("/ui/jobs?state=exploded")
        assert response.status_code == 422 and "state: must be one of" in response.text
        response = await api.client.get("/ui/jobs?schedule_id=nope")
        assert response.status_code == 422 and "schedule_id: must be a UUID" in response.text
        response = await api.client.get("/ui/jobs?cursor=forged")
        assert response.status_code == 422


async def test_job_page_shows_payload_result_error_and_every_run() -> None:
    async with running_ui() as (api, _):
        job = running(api, worker="box-7:4242:beef", max_attempts=2, payload={"to": "a@b.c"})
        failed, run = job.fail(token=job.version, now=T0 + timedelta(seconds=2), error="SMTP 554")
        api.jobs.save_now(failed, run)
        promoted = failed.promote(now=T0 + timedelta(seconds=3))
        api.jobs.save_now(promoted)
        again = promoted.start(worker_id="box-8:1:cafe", now=T0 + timedelta(seconds=3), lease_seconds=30)
        api.jobs.save_now(again)
        done, run = again.succeed(token=again.version, now=T0 + timedelta(seconds=3.25), result={"sent": 1})
        api.jobs.save_now(done, run)
        html = (await api.client.get(f"/ui/jobs/{job.id}")).text
        assert "&#34;to&#34;: &#34;a@b.c&#34;" in html and "&#34;sent&#34;: 1" in html
        assert "SMTP 554" in html  # the first run's error, kept in history
        assert "box-7:4242:beef" in html and "box-8:1:cafe" in html
        assert "2.00 s" in html and "250 ms" in html  # each run's duration
        assert "/retry" not in html and "/cancel" not in html  # succeeded: nothing to press


async def test_job_page_offers_the_buttons_the_state_allows() -> None:
    async with running_ui() as (api, _):
        queued, failed = add(api), finished(api, ok=False)
        queued_html = (await api.client.get(f"/ui/jobs/{queued.id}")).text
        assert f"/ui/jobs/{queued.id}/cancel" in queued_html and "/retry" not in queued_html
        failed_html = (await api.client.get(f"/ui/jobs/{failed.id}")).text
        assert f"/ui/jobs/{failed.id}/retry" in failed_html and "/cancel" not in failed_html


async def test_unknown_or_malformed_job_ids_are_not_found_pages() -> None:
    async with running_ui() as (api, _):
        for path in ["/ui/jobs/nope", "/ui/jobs/00000000-0000-7000-8000-000000000000"]:
            response = await api.client.get(path)
            assert response.status_code == 404 and "Not found" in response.text
            assert response.headers["content-type"].startswith("text/html")


async def test_user_data_is_escaped() -> None:
    async with running_ui() as (api, _):
        job = add(api, task="<script>alert(1)</script>", payload={"x": "<img src=x onerror=alert(1)>"})
        html = (await api.client.get(f"/ui/jobs/{job.id}")).text
        assert "<script>alert" not in html and "<img src=x" not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


async def test_schedules_list_shows_rule_zone_and_next_fire_local_and_utc() -> None:
    async with running_ui() as (api, _):
        await create_schedule(api)  # "0 3 * * *" in Europe/Paris; T0 is 2026-03-02 12:00 UTC
        await create_schedule(api, name="every-5", cron=None, interval_seconds=300, timezone="UTC")
        html = (await api.client.get("/ui/schedules")).text
        assert rows(html) == 2
        assert "2026-03-03 03:00 CET" in html and "2026-03-03 02:00 UTC" in html
        assert 'title="2026-03-03 03:00:00 CET (+01:00)"' in html
        assert "every 5 min" in html and "Europe/Paris" in html


async def test_schedule_page_shows_next_fires_recent_jobs_and_the_ledger() -> None:
    async with running_ui() as (api, csrf):
        schedule = await create_schedule(api, name="dst", cron="30 2 * * *", timezone="Europe/Paris")
        api.clock.at = T0.replace(month=3, day=27)
        await api.client.post(f"/v1/schedules/{schedule['id']}/trigger")
        html = (await api.client.get(f"/ui/schedules/{schedule['id']}")).text
        assert "2026-03-28 02:30 CET (+01:00)" in html
        assert "2026-03-29 03:00 CEST (+02:00)" in html  # 02:30 does not exist that night: first instant after
        assert "2026-03-30 02:30 CEST (+02:00)" in html and "2026-03-30 00:30 UTC" in html
        assert ">fired</span>" in html and 'badge s-queued">queued' in html
        assert f'action="/ui/schedules/{schedule["id"]}/pause"' in html and "/resume" not in html
        confirm = (await api.client.get(f"/ui/schedules/{schedule['id']}/delete")).text
        assert "Delete schedule “dst”?" in confirm and f'value="{csrf}"' in confirm


async def test_failed_page_lists_failed_jobs_with_their_errors() -> None:
    async with running_ui() as (api, _):
        failed = [finished(api, ok=False, queue=q) for q in ("mail", "mail", "reports")]
        finished(api)
        html = (await api.client.get("/ui/failed")).text
        assert rows(html) == 3 and html.count(">boom<") == 3
        assert "Retry all" in html and "Cancel all" not in html  # failed jobs cannot be cancelled
        mail = (await api.client.get("/ui/failed?queue=mail")).text
        assert rows(mail) == 2 and failed[2].id[-12:] not in mail
        waiting = (await api.client.get("/ui/failed?state=scheduled")).text
        assert "Cancel all" in waiting and "Retry all" not in waiting
        anything = (await api.client.get("/ui/failed?state=any")).text
        assert "Cancel all" in anything and "Retry all" in anything and rows(anything) == 4
