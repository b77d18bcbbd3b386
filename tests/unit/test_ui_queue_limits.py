"""The /ui overview shows each queue's runtime limits (SPEC §6), and a configured queue without jobs."""

from __future__ import annotations

from tests.unit.ui_support import add, running_ui


async def test_overview_shows_paused_queues_and_their_limits() -> None:
    async with running_ui() as (api, _):
        add(api, queue="mail")
        add(api, queue="plain")
        await api.container.update_queue()("mail", {"paused": True, "max_running": 1500, "max_per_second": 2.5})
        await api.container.update_queue()("idle", {"max_per_second": 10.0})
        html = (await api.client.get("/ui")).text
        mail = html.split(">mail</strong>", 1)[1].split("</tr>", 1)[0]
        idle = html.split(">idle</strong>", 1)[1].split("</tr>", 1)[0]
        plain = html.split(">plain</strong>", 1)[1].split("</tr>", 1)[0]
    assert "paused" in mail and "≤ 1,500 running" in mail and "≤ 2.5/s" in mail
    assert "≤ 10/s" in idle and "paused" not in idle
    assert '<td class="limits"><span class="dim">\u2013</span></td>' in plain  # an en dash: no limits
