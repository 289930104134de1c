#!/usr/bin/env python3
"""The chat page and the cluster view in a real browser (headless Chromium through WebDriver).

Run by tests/web.rs on a real 3-node cluster; it can also be run by hand against one:

    tests/web/browser.py --leader-url http://127.0.0.1:52051 --follower-url http://127.0.0.1:52052 \
        --leader-pid <pid of the leader's process> --room demo --shots /tmp/shots

Two browser sessions open the same room: A on the leader's page, B on a follower's. They take
turns sending; halfway, with a send of A in flight to it (the leader is frozen with SIGSTOP
before A clicks Send), the leader is killed with SIGKILL, so page A loses its node (its event
stream and its pending send must fail over) and B's sends must reach the new leader. Checks:
- every send is acknowledged (shown with a seq) and each page sees the other's messages;
- at the end both pages show the identical list: every acknowledged message exactly once, in
  seq order, seqs 1..n without a gap;
- with --history-size N, a room of N messages opens on its newest 50 and "Load older
  messages" brings the rest, in order;
- B's cluster view shows a new leader and the old one unreachable.
With --token, only the client-token check runs instead (see with_token).
Screenshots of the chat page and the cluster view go to --shots. The result (the messages each
page shows) is printed as one JSON line on stdout for the Rust side to compare with the nodes'
own history. Any failed check exits non-zero with the reason.
"""

import argparse
import json
import os
import signal
import sys
import urllib.request
import uuid

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

# Upper bound of any wait: generous, because CI machines are small and shared.
WAIT = 60


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def browser(driver_path):
    opts = webdriver.ChromeOptions()
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
              "--window-size=1200,760", "--disable-gpu"):
        opts.add_argument(a)
    if os.path.exists("/usr/bin/chromium"):
        opts.binary_location = "/usr/bin/chromium"
    return webdriver.Chrome(service=Service(driver_path), options=opts)


def wait(d, what, cond, timeout=WAIT):
    try:
        return WebDriverWait(d, timeout, poll_frequency=0.1).until(lambda d: cond(d))
    except Exception as e:
        raise SystemExit(f"timed out waiting for {what}: {e!r}\npage error: {page_error(d)}")


def page_error(d):
    try:
        return d.find_element(By.ID, "error").text
    except Exception:
        return "?"


def shown(d):
    """The messages a page shows, in DOM order: [(seq, author, text)]."""
    return d.execute_script("""
        return [...document.querySelectorAll('#messages li.msg[data-seq]')].map(li =>
            [Number(li.dataset.seq), li.querySelector('.author').textContent,
             li.querySelector('.text').textContent]);""")


def pending(d):
    return d.execute_script("return document.querySelectorAll('#messages li.pending').length")


def set_field(d, field_id, value):
    e = d.find_element(By.ID, field_id)
    e.clear()
    e.send_keys(value)
    d.execute_script("arguments[0].dispatchEvent(new Event('change'))", e)


def submit(d, text):
    """Types `text` and clicks Send (the page shows it pending until acknowledged)."""
    box = d.find_element(By.ID, "text")
    box.send_keys(text)
    d.find_element(By.ID, "send-button").click()


def send(d, text):
    """Sends `text` and returns its seq once acknowledged."""
    submit(d, text)
    return acked_seq(d, text)


def acked_seq(d, text):
    """Waits until the page shows `text` acknowledged (with a seq, nothing pending)."""
    wait(d, f"ack of {text!r}", lambda d: pending(d) == 0 and any(t == text for _, _, t in shown(d)))
    err = page_error(d)
    if err.startswith("not sent"):
        raise SystemExit(f"send of {text!r} failed: {err}")
    return next(s for s, _, t in shown(d) if t == text)


def node_of(d):
    return d.execute_script("return document.getElementById('node').dataset.node || ''")


def with_token(a):
    """A cluster with client tokens: the page says it needs one; once it is typed into the
    Token box the page loads, sends (the author is the token's user) and follows the room live
    (its event stream carries the token as access_token)."""
    d = browser(a.chromedriver)
    try:
        d.get(f"{a.leader_url}/?room={a.room}")
        wait(d, "the page to ask for a token", lambda d: "UNAUTHENTICATED" in page_error(d))
        set_field(d, "token", a.token)
        wait(d, "the page to name its node", lambda d: node_of(d) != "")
        wait(d, "the error to clear", lambda d: page_error(d) == "")
        seq = send(d, "sent with a token")
        author = next(au for s, au, _ in shown(d) if s == seq)
        if author != a.token_user:
            raise SystemExit(f"author {author!r}, want the token's user {a.token_user!r}")
        req = urllib.request.Request(
            f"{a.leader_url}/v1/rooms/{a.room}/messages", method="POST",
            data=json.dumps({"text": "from curl", "client_request_id": str(uuid.uuid4())}).encode(),
            headers={"Authorization": f"Bearer {a.token}", "Content-Type": "application/json"})
        urllib.request.urlopen(req, timeout=30).read()
        wait(d, "the other client's message, live", lambda d: any(t == "from curl" for _, _, t in shown(d)))
        log(f"token page: sent as {author}, saw a message sent elsewhere live")
        print(json.dumps({"shown": shown(d)}))
    finally:
        d.quit()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--leader-url", required=True)
    ap.add_argument("--follower-url", default="")
    ap.add_argument("--leader-id", type=int, default=0)
    ap.add_argument("--leader-pid", type=int, default=0)
    ap.add_argument("--room", default="browser")
    ap.add_argument("--shots", default="")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--history-room", default="history")
    ap.add_argument("--history-size", type=int, default=0)
    ap.add_argument("--chromedriver", default="/usr/bin/chromedriver")
    ap.add_argument("--token", help="run only the client-token check, with this token")
    ap.add_argument("--token-user", default="")
    a = ap.parse_args()
    if a.token:
        return with_token(a)
    if not (a.follower_url and a.leader_id and a.leader_pid and a.shots):
        ap.error("--follower-url, --leader-id, --leader-pid and --shots are needed")
    os.makedirs(a.shots, exist_ok=True)

    pa = browser(a.chromedriver)
    pb = browser(a.chromedriver)
    try:
        pa.get(f"{a.leader_url}/?room={a.room}")
        pb.get(f"{a.follower_url}/?room={a.room}")
        for d, name in ((pa, "ada"), (pb, "bob")):
            wait(d, "the page to name its node", lambda d: node_of(d) != "")
            # The page learns the members from the cluster status before it can fail over.
            wait(d, "the page to know every member", lambda d: d.execute_script(
                "return JSON.parse(localStorage.getItem('rustyraft.nodes') || '[]').length") >= 3)
            set_field(d, "author", name)
        log(f"page A on node {node_of(pa)}, page B on node {node_of(pb)}")
        if node_of(pa) != str(a.leader_id):
            raise SystemExit(f"page A should start on the leader {a.leader_id}, is on {node_of(pa)}")

        acked = []  # (page, text, seq) of every acknowledged send
        killed = False
        for i in range(a.rounds):
            if i == a.rounds // 2:
                # A's send is in flight to the leader when it dies: the leader is frozen
                # (SIGSTOP) before the click, so the request cannot be answered, then killed.
                # The page must retry it elsewhere and show it exactly once.
                os.kill(a.leader_pid, signal.SIGSTOP)
                submit(pa, f"A{i}: in flight at the kill")
                wait(pa, "the send to be pending", lambda d: pending(d) == 1)
                log(f"kill -9 of the leader, node {a.leader_id} (pid {a.leader_pid})")
                os.kill(a.leader_pid, signal.SIGKILL)
                killed = True
                seq = acked_seq(pa, f"A{i}: in flight at the kill")
                acked.append(("A", f"A{i}: in flight at the kill", seq))
                log(f"A's in-flight send is seq {seq} via node {node_of(pa)}")
            for d, who in ((pa, "A"), (pb, "B")):
                text = f"{who}{i}: {'after' if killed else 'before'} the kill"
                seq = send(d, text)
                acked.append((who, text, seq))
                log(f"{who} sent {text!r} as seq {seq} via node {node_of(d)}")
            # Each page sees the other's message of this round live.
            for d in (pa, pb):
                want = {t for _, t, _ in acked}
                wait(d, "the other page's messages", lambda d: want <= {t for _, _, t in shown(d)})

        want = sorted(seq for _, _, seq in acked)
        for d in (pa, pb):
            wait(d, "every acknowledged message", lambda d: [s for s, _, _ in shown(d)] == want)
        la, lb = shown(pa), shown(pb)
        if la != lb:
            raise SystemExit(f"the pages differ:\nA: {la}\nB: {lb}")
        seqs = [s for s, _, _ in la]
        if seqs != list(range(1, len(seqs) + 1)):
            raise SystemExit(f"seqs are not 1..n in order: {seqs}")
        texts = [t for _, _, t in la]
        for _, text, seq in acked:
            if texts.count(text) != 1:
                raise SystemExit(f"{text!r} shown {texts.count(text)} times")
            if la[seq - 1][2] != text:
                raise SystemExit(f"seq {seq} shows {la[seq - 1][2]!r}, acknowledged as {text!r}")
        if node_of(pa) == str(a.leader_id):
            raise SystemExit("page A still claims the killed node")
        log(f"both pages show the same {len(la)} messages; page A failed over to node {node_of(pa)}")
        pa.save_screenshot(os.path.join(a.shots, "web-chat.png"))

        # Scroll-back: a room of --history-size messages (sent by the Rust side) opens on its
        # newest 50; "Load older messages" brings the rest, in order.
        if a.history_size:
            n = a.history_size
            pb.get(f"{a.follower_url}/?room={a.history_room}")
            newest = list(range(max(1, n - 49), n + 1))
            wait(pb, "the newest page", lambda d: [s for s, _, _ in shown(d)] == newest)
            older = pb.find_element(By.ID, "older")
            if not older.is_displayed():
                raise SystemExit("no 'Load older messages' with older messages to load")
            while older.is_displayed():
                count = len(shown(pb))
                older.click()
                wait(pb, "an older page", lambda d: len(shown(d)) > count or not older.is_displayed())
            if [s for s, _, _ in shown(pb)] != list(range(1, n + 1)):
                raise SystemExit(f"scroll-back shows {[s for s, _, _ in shown(pb)]}")
            log(f"scroll-back: all {n} messages of {a.history_room}, in order")

        pb.get(f"{a.follower_url}/cluster")
        old = str(a.leader_id)

        def new_leader(d):
            lead = d.execute_script("return document.getElementById('summary').dataset.leader || ''")
            row = d.find_elements(By.CSS_SELECTOR, f"tr[data-node='{old}'].down")
            return lead not in ("", old) and row and lead

        leader = wait(pb, "the cluster view to show a new leader", new_leader)
        log(f"cluster view shows node {leader} leading, node {old} unreachable")
        pb.save_screenshot(os.path.join(a.shots, "web-cluster.png"))
        print(json.dumps({"a": la, "b": lb, "acked": acked, "new_leader": int(leader),
                          "a_node": int(node_of(pa))}))
    finally:
        pa.quit()
        pb.quit()


if __name__ == "__main__":
    main()
