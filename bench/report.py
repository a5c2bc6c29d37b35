# ruff: noqa: E501  (long f-strings of table cells and SQL read better unwrapped)
"""The readable table printed at the end (markdown, pasteable into the README)."""

from __future__ import annotations

from typing import Any


def _f(x: Any, unit: str = "", nd: int = 1) -> str:
    if x is None:
        return "–"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int | float):
        if abs(x) >= 10_000:
            return f"{x:,.0f}{unit}"
        return f"{x:.{nd}f}{unit}"
    return f"{x}{unit}"


def _ok(x: Any) -> str:
    return "–" if x is None else ("✅" if x else "❌")


def _g(d: Any, *keys: Any) -> Any:
    for k in keys:
        if not isinstance(d, dict | list):
            return None
        try:
            d = d[k]
        except (KeyError, IndexError, TypeError):
            return None
    return d


#: Every benchmark section, in the order they run and are reported.
SECTIONS = [
    "ttft",
    "throughput",
    "load",
    "ceiling",
    "observers",
    "watchers",
    "flushes",
    "burst",
    "diskbytes",
    "coldstart",
    "dialects",
    "kernel",
    "store",
    "browser",
    "jupyter_ai",
]


def table(r: dict[str, Any]) -> str:
    rows: list[tuple[str, str, str, str, str]] = []

    def add(what: str, r3nb: str, base: str, target: str, ok: Any) -> None:
        rows.append((what, r3nb, base, target, _ok(ok)))

    for name in SECTIONS:
        v = r.get(name)
        if isinstance(v, dict) and ("error" in v or "skipped" in v):
            add(name, "not measured", "", str(v.get("error") or v.get("skipped"))[:90], None)

    t = r.get("ttft")
    if isinstance(t, dict) and "median_ms" in t:
        m = t["median_ms"]
        add(
            "Time to first token (median, client)",
            f"lean {_f(m['r3nb_lean'], ' ms')} · litellm path {_f(m['r3nb_litellm'], ' ms')}",
            f"litellm {_f(m['litellm'], ' ms')} · httpx {_f(m['httpx'], ' ms')}",
            f"≤ litellm + 5 ms (Δ {_f(t['r3nb_lean_minus_litellm_ms'], ' ms')})",
            t["pass"],
        )
    t = r.get("throughput")
    if isinstance(t, dict) and "median" in t:
        m, ratio = t["median"], t["ratio_vs_litellm"]
        add(
            f"One {t['tokens']:,}-token reply, no delay (tokens/s)",
            f"lean {_f(_g(m, 'r3nb_lean', 'tokens_per_s'))} ({_f(ratio['r3nb_lean'], '×', 2)})"
            f" · litellm path {_f(_g(m, 'r3nb_litellm', 'tokens_per_s'))}"
            f" ({_f(ratio['r3nb_litellm'], '×', 2)})",
            f"litellm {_f(_g(m, 'litellm', 'tokens_per_s'))} · httpx {_f(_g(m, 'httpx', 'tokens_per_s'))}",
            "≥ 0.9× litellm",
            t["pass"]["throughput_lean"] and t["pass"]["throughput_litellm_path"],
        )
        add(
            "Server CPU per streamed token",
            f"lean {_f(_g(m, 'r3nb_lean', 'server_cpu_ms_per_token'), ' ms', 3)}"
            f" · litellm path {_f(_g(m, 'r3nb_litellm', 'server_cpu_ms_per_token'), ' ms', 3)}",
            f"litellm in-process {_f(_g(m, 'litellm', 'client_cpu_ms_per_token'), ' ms', 3)}"
            f" · httpx {_f(_g(m, 'httpx', 'client_cpu_ms_per_token'), ' ms', 3)}",
            "≤ 0.5 ms (lean)",
            t["pass"]["cpu_per_token_lean"],
        )
    lo = r.get("load")
    if isinstance(lo, dict) and "r3nb" in lo:
        a, b, c = lo["r3nb"], lo.get("litellm", {}), lo.get("httpx", {})
        idle = lo.get("idle_api_status", {})
        add(
            f"{a['streams']} streams × 100 tokens/s: pace (min / median)",
            f"{_f(a['pace_min'], '', 2)} / {_f(a['pace_median'], '', 2)},"
            f" exact {a['complete_and_byte_exact']}, TTFT p50 {_f(a['ttft_p50_ms'], ' ms', 0)}",
            f"litellm {_f(b.get('pace_min'), '', 2)} / {_f(b.get('pace_median'), '', 2)}"
            f" · httpx {_f(c.get('pace_min'), '', 2)} / {_f(c.get('pace_median'), '', 2)}",
            "every stream ≥ 0.95, byte-exact",
            a["pass_pace"],
        )
        st, lag = a.get("api_status") or {}, a.get("loop_lag") or {}
        add(
            "… `GET /api/status` p99 / in-process loop lag p99",
            f"{_f(st.get('p99_ms'), ' ms')} / {_f(lag.get('p99_ms'), ' ms')}",
            f"idle server: {_f(_g(idle, 'api_status', 'p99_ms'), ' ms')}"
            f" / {_f(_g(idle, 'loop_lag', 'p99_ms'), ' ms')}",
            "< 50 ms each",
            None if not st else (st["p99_ms"] or 1e9) < 50 and (lag.get("p99_ms") or 0) < 50,
        )
        add(
            "… server CPU per token under load",
            f"{_f(a['server_cpu_ms_per_token'], ' ms', 3)}",
            f"litellm client CPU {_f(b.get('client_cpu_s'), ' s')} for the same tokens",
            "≤ 0.5 ms",
            (a["server_cpu_ms_per_token"] or 1e9) <= 0.5,
        )
    ce = r.get("ceiling")
    if isinstance(ce, dict) and "runs" in ce:
        for run in ce["runs"]:
            if run["path"] != "r3nb":
                continue
            other = next(
                (
                    x
                    for x in ce["runs"]
                    if x["path"] == "litellm" and x["streams"] == run["streams"]
                ),
                {},
            )
            add(
                f"Ceiling: {run['streams']} streams × 100 tokens/s (delivered tokens/s, min pace)",
                f"{_f(run['delivered_tokens_per_s'])}, {_f(run['pace_min'], '', 2)},"
                f" exact {run['complete_and_byte_exact']}",
                f"litellm {_f(other.get('delivered_tokens_per_s'))}, {_f(other.get('pace_min'), '', 2)}",
                f"provider {_f(run['provider_tokens_per_s'])}",
                run["pass_pace"],
            )
    ob = r.get("observers")
    if isinstance(ob, dict) and "observers" in ob:
        o = ob["observers"]
        add(
            f"{o['n']} observers polling during {ob['streams']} streams: staleness p99",
            f"{_f(o['staleness_p99_ms'], ' ms', 0)} (p50 {_f(o['staleness_p50_ms'], ' ms', 0)}),"
            f" poll p99 {_f(o['poll_latency_p99_ms'], ' ms', 0)}",
            "",
            f"< {_f(o['staleness_target_ms'], ' ms', 0)}",
            (o["staleness_p99_ms"] or 1e9) < o["staleness_target_ms"],
        )
        add(
            "… bytes to one observer / reply text (median, max)",
            f"{_f(o['bytes_per_observer_over_reply_median'], '×', 2)},"
            f" {_f(o['bytes_per_observer_over_reply_max'], '×', 2)}; final text exact {o['final_text_exact']}",
            "jupyter-ai 3.2 (DESIGN): ~150× (218 KB for 1.4 KB)",
            "≤ 1.5×",
            (o["bytes_per_observer_over_reply_median"] or 1e9) <= 1.5,
        )
        add(
            "… pace / `GET /api/status` p99 with observers",
            f"{_f(ob['pace_min'], '', 2)} / {_f(_g(ob, 'api_status', 'p99_ms'), ' ms')}",
            f"loop lag p99 {_f(_g(ob, 'loop_lag', 'p99_ms'), ' ms')}",
            "≥ 0.95 / < 50 ms",
            ob["pass_pace"] and (_g(ob, "api_status", "p99_ms") or 1e9) < 50,
        )
    wa = r.get("watchers")
    if isinstance(wa, dict) and "observers" in wa:
        o, idle = wa["observers"], wa.get("idle") or {}
        alone = wa.get("without_watchers") or {}
        polled = _g(r, "observers", "observers") or {}
        add(
            f"{o['n']} watchers (watch stream) during {wa['streams']} streams: staleness p99",
            f"{_f(o['staleness_p99_ms'], ' ms', 0)} (p50 {_f(o['staleness_p50_ms'], ' ms', 0)}),"
            f" loop lag p99 {_f(_g(wa, 'loop_lag', 'p99_ms'), ' ms')},"
            f" server CPU {_f(wa.get('server_cpu_ms_per_token'), ' ms', 3)}/token",
            f"same streams unwatched: loop lag p99 {_f(_g(alone, 'loop_lag', 'p99_ms'), ' ms')},"
            f" CPU {_f(alone.get('server_cpu_ms_per_token'), ' ms', 3)}/token"
            + (
                f"; {polled['n']} pollers: staleness p99 {_f(polled.get('staleness_p99_ms'), ' ms', 0)}"
                if polled
                else ""
            ),
            f"≤ {_f(o['staleness_target_ms'], ' ms', 0)} / lag < 50 ms",
            (o["staleness_p99_ms"] or 1e9) <= o["staleness_target_ms"]
            and (_g(wa, "loop_lag", "p99_ms") or 1e9) < 50,
        )
        prose = wa.get("prose") or {}
        add(
            "… bytes to one watcher / reply text on the wire, gzip (median, max; a prose"
            " reply); uncompressed; idle watcher memory",
            f"{_f(o['bytes_per_observer_over_reply_median'], '×', 2)},"
            f" {_f(o['bytes_per_observer_over_reply_max'], '×', 2)};"
            f" prose {_f(prose.get('wire_over_reply_median'), '×', 2)};"
            f" uncompressed {_f(o.get('decoded_bytes_per_observer_over_reply_median'), '×', 2)}"
            f" (prose {_f(prose.get('decoded_over_reply_median'), '×', 2)});"
            f" exact {o['final_text_exact']};"
            f" {_f(idle.get('kb_per_idle_watcher'), ' KB', 1)} per idle watcher",
            f"pollers {_f(polled.get('bytes_per_observer_over_reply_median'), '×', 2)}"
            if polled
            else "",
            "≤ 1.2×; stated",
            (o["bytes_per_observer_over_reply_median"] or 1e9) <= 1.2
            and (prose.get("wire_over_reply_median") or 1e9) <= 1.2,
        )
    fl = r.get("flushes")
    if isinstance(fl, list):
        add(
            "DB writes per reply (tokens: writes ≤ bound)",
            "; ".join(
                f"{x['tokens']:,}{'@' + str(x['delay']) if x['delay'] else ''}:"
                f" {x['db_writes_for_reply']} ≤ {x['bound']:.1f}"
                for x in fl
            ),
            "",
            "≤ duration/interval + 3",
            all(x["pass"] for x in fl),
        )
    b = r.get("burst")
    if isinstance(b, dict) and "r3nb_first_delta_ms" in b:
        add(
            f"A burst of {b['sends']} sends in one instant: first delta p50 / p99",
            f"{_f(b['r3nb_first_delta_ms']['p50'], ' ms')} / "
            f"{_f(b['r3nb_first_delta_ms']['p99'], ' ms')} ({b['failed']} failed);"
            f" server CPU {_f(b.get('server_cpu_ms_per_send'), ' ms')} per send",
            f"straight to the provider {_f(b['direct_first_delta_ms']['p50'], ' ms')} / "
            f"{_f(b['direct_first_delta_ms']['p99'], ' ms')}",
            f"p99 ≤ direct + 100 ms (Δ {_f(b['p99_minus_direct_ms'], ' ms')})",
            b["pass"],
        )
    if isinstance(b, dict) and isinstance(b.get("store_admissions"), dict):
        a = b["store_admissions"]
        add(
            f"… the same burst's {b['sends']} admissions in the store alone: durable p50 / p99",
            f"{_f(a['durable_ms']['p50'], ' ms')} / {_f(a['durable_ms']['p99'], ' ms')}",
            f"transactions per burst: {a['transactions_per_burst']};"
            f" the 50 replies' ends: {_f(_g(a, 'all_ends_durable_ms', 'p50'), ' ms')}",
            "",
            None,
        )
    d = r.get("diskbytes")
    if isinstance(d, dict) and "rows" in d:
        add(
            "Bytes written to disk per reply byte (snapshot_interval 0.25)",
            "; ".join(
                f"{x['tokens']:,} tokens: {_f(x['write_bytes_per_text_byte'], '', 1)}"
                f" (wchar {_f(x['wchar_per_text_byte'], '', 1)})"
                for x in d["rows"]
            ),
            "",
            "≤ 8 at 100k tokens, flat",
            d["pass"],
        )
    cs = r.get("coldstart")
    if isinstance(cs, dict) and "lean" in cs:
        add(
            "Cold start: health · first TTFT / warm · loop lag max",
            "; ".join(
                f"{p}: {_f(cs[p]['health_after_s'], ' s', 1)} · "
                f"{_f(cs[p]['first_ttft_ms'], ' ms')} / {_f(cs[p]['warm_ttft_ms'], ' ms')} · "
                f"{_f(cs[p]['loop_lag_max_ms'], ' ms')}"
                for p in ("lean", "litellm", "litellm_when_ready")
                if p in cs
            ),
            f"litellm ready after {_f(_g(cs, 'litellm', 'provider_loaded_after_s'), ' s', 1)}"
            " (the reply sent at health waits for it)",
            "TTFT ≤ 3× warm + 50 ms (litellm: sent when ready); lag ≤ 100 ms",
            cs["pass"],
        )
    dl = r.get("dialects")
    if isinstance(dl, dict) and "ollama_chat" in dl:
        add(
            "First token per dialect: r3nb vs litellm direct (p50)",
            "; ".join(
                f"{n}: {_f(dl[n]['r3nb_ttft_p50_ms'], ' ms')} vs {_f(dl[n]['direct_ttft_p50_ms'], ' ms')}"
                for n in (
                    "openai-lean",
                    "openai-litellm",
                    "ollama_chat",
                    "ollama",
                    "anthropic",
                    "gemini",
                )
                if n in dl
            ),
            "",
            "Ollama: within 10 ms",
            dl["pass"],
        )
    k = r.get("kernel")
    if isinstance(k, dict) and "chat" in k:
        add(
            "`%load_ext r3nb` in a real kernel",
            f"{_f(k['load_ext_ms_median'], ' ms')}, +{_f(k['load_ext_rss_mb_median'], ' MB')}",
            "",
            "< 300 ms",
            k["load_ext_pass"],
        )
        c = k["chat"]
        if "display_messages" in c:
            add(
                f"`%%chat` at 5,000 tokens/s ({c['tokens']:,} tokens)",
                f"{c['max_display_messages_in_1s']} updates/s max, {c['display_messages']} total,"
                f" {len(c['rate_exceeded_notices'])} rate-exceeded notices,"
                f" {_f(c['iopub_display_bytes'] / 1e6, ' MB', 2)} on IOPub",
                "",
                "no rate-exceeded, ≤ 30 updates/s",
                c["pass"],
            )
    s = r.get("store")
    if isinstance(s, dict) and "messages" in s:
        add(
            f"Store with {s['messages']:,} messages: snapshot query (since=0 / nothing new)",
            f"{_f(s['snapshot_since_0_ms_median'], ' ms')} / {_f(s['snapshot_nothing_new_ms_median'], ' ms')}",
            f"get_conversation alone {_f(s['get_conversation_ms_median'], ' ms')}",
            "< 50 ms",
            s["pass"]["snapshot"],
        )
        add(
            "… sweep (100 stale rows / nothing to do)",
            f"{_f(s['sweep_with_stale_rows_ms'], ' ms')} / {_f(s['sweep_nothing_to_do_ms_median'], ' ms')}",
            "",
            "< 50 ms",
            s["pass"]["sweep"],
        )
        add(
            "… DB bytes per stored message",
            f"{_f(s['db_bytes_per_message'], ' B', 0)} (avg text {_f(s['avg_content_chars'], ' chars', 0)})",
            "",
            "report",
            None,
        )
    b = r.get("browser")
    if isinstance(b, dict) and "runs" in b:
        for shape in dict.fromkeys(x["shape"] for x in b["runs"]):
            g = b.get("growth", {}).get(shape, {})
            add(
                f"Browser, {shape} reply at 1,000 tok/s: scripting / all tasks / longest task",
                "; ".join(
                    f"{x['tokens']:,} tokens: {_f(x['scripting_ms'], ' ms', 0)} /"
                    f" {_f(x['task_ms'], ' ms', 0)} / {_f(x['longest_task_ms'], ' ms', 0)}"
                    for x in b["runs"]
                    if x["shape"] == shape
                )
                + (
                    f" (size ×{g['size']:.1f} → scripting ×{g['scripting']:.1f},"
                    f" tasks ×{g['task']:.1f})"
                    if g
                    else ""
                ),
                "",
                "~linear; no task > 50 ms" if shape == "paragraphs" else "worst case, report",
                b.get("pass") if shape == "paragraphs" else None,
            )
    j = r.get("jupyter_ai")
    if isinstance(j, dict) and "runs" in j:
        ttft_r3nb = _g(r, "ttft", "median_ms", "r3nb_lean")
        ob_ratio = _g(r, "observers", "observers", "bytes_per_observer_over_reply_median")
        cpu_r3nb = _g(r, "load", "r3nb", "server_cpu_ms_per_token")
        for x in j["runs"]:
            add(
                f"vs jupyter-ai {j.get('version', '3.x')}: {x['tokens']:,}-token reply at 100 tok/s,"
                " time to first token",
                f"{_f(ttft_r3nb, ' ms')} (HTTP client; browser panel not timed)",
                f"jupyter-ai {_f(x.get('sender_first_token_ms'), ' ms', 0)} (click → visible in the"
                f" sender's page); whole reply {_f(x.get('sender_complete_ms'), ' ms', 0)}"
                f" for a {x['tokens'] * x['delay']:.0f} s provider reply",
                "context",
                None,
            )
            add(
                "… bytes to an observer page / reply text",
                f"{_f(ob_ratio, '×', 2)} (snapshot polls)",
                f"jupyter-ai {_f(x.get('observer_bytes_over_reply'), '×', 0)} (websocket, Yjs);"
                f" sender page {_f(x.get('sender_bytes_over_reply'), '×', 0)}",
                "context",
                None,
            )
            add(
                "… server CPU per token",
                f"{_f(cpu_r3nb, ' ms', 3)} (50 streams)",
                f"jupyter-ai {_f(x.get('server_cpu_ms_per_token'), ' ms', 2)} (one stream, two pages)",
                "context",
                None,
            )

    head = "| benchmark | r3nb | baselines | target | ok |\n|---|---|---|---|---|\n"
    body = "\n".join("| " + " | ".join(x.replace("|", "/") for x in row) + " |" for row in rows)
    m = r.get("machine", {})
    foot = (
        f"\n\n{r.get('mode')} run, {m.get('nproc')} cores ({m.get('cpu')}), load average at"
        f" start {m.get('loadavg_at_start')}, Python {m.get('python')},"
        f" litellm {r.get('versions', {}).get('litellm')}, {r.get('total_seconds')} s"
    )
    return head + body + foot
