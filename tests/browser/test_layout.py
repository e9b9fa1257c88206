"""Every main page, as the persona who uses it, at phone width (375 px) and desktop width
(1280 px), on the demo lab: the document never scrolls sideways, every column of every table can
be read (its cells have a size, lie inside the window and are not cut off by a box around them),
status pills stay on one line, the console stays clean (a CSP violation is a console error), and
every visible form control has an accessible name."""

import pytest
from playwright.sync_api import expect

from devtools.demo import load_demo, load_demo_requests
from requests_app.models import ComputeRequest
from requests_app.workflow import Status
from tests.browser.conftest import DESKTOP, PHONE

pytestmark = pytest.mark.browser

# Returns the problems of the page now in the browser, as sentences.
CHECK_PAGE = """
() => {
  const problems = [];
  const doc = document.documentElement;
  if (doc.scrollWidth > window.innerWidth + 1) {
    const wide = [...document.querySelectorAll("body *")]
      .filter((el) => el.getBoundingClientRect().right > window.innerWidth + 1)
      .filter((el) => !el.closest(".table-wrap") || el.matches(".table-wrap"))
      .slice(0, 5)
      .map((el) => el.tagName.toLowerCase() + (el.className ? "." + String(el.className).replace(/ /g, ".") : ""));
    problems.push(`scrolls sideways: ${doc.scrollWidth}px wide in a ${window.innerWidth}px window (${wide.join(", ")})`);
  }
  const visible = (el) => {
    const style = getComputedStyle(el);
    const box = el.getBoundingClientRect();
    return style.display !== "none" && style.visibility !== "hidden" && box.width > 0 && box.height > 0;
  };
  const refsOk = (el, attr) => (el.getAttribute(attr) || "").split(/\\s+/).filter(Boolean)
    .every((id) => document.getElementById(id));
  for (const el of document.querySelectorAll("input, select, textarea, button")) {
    if (el.type === "hidden" || !visible(el)) continue;
    const what = `${el.tagName.toLowerCase()}[name=${el.name || el.id || "?"}]`;
    const named = (el.labels && [...el.labels].some((l) => l.textContent.trim()))
      || (el.getAttribute("aria-label") || "").trim()
      || (el.getAttribute("aria-labelledby") && refsOk(el, "aria-labelledby"))
      || (el.tagName === "BUTTON" && el.textContent.trim());
    if (!named) problems.push(`${what} has no accessible name`);
  }
  for (const el of document.querySelectorAll("[aria-describedby], [aria-labelledby]")) {
    for (const attr of ["aria-describedby", "aria-labelledby"]) {
      if (el.hasAttribute(attr) && !refsOk(el, attr)) {
        problems.push(`${el.tagName.toLowerCase()} ${attr}="${el.getAttribute(attr)}" points nowhere`);
      }
    }
  }
  if (!document.querySelector("h1")) problems.push("no h1");
  return problems;
}
"""


# Returns, as sentences, every table column whose content a person cannot read in the window:
# for each table (outside a closed <details>), for each header, each body cell of that column
# (colspan 1) must have a size, its content must lie inside the window horizontally, and no
# ancestor that clips (overflow other than visible) may cut it off. Also: pills on one line.
CHECK_COLUMNS = """
() => {
  const problems = [];
  const width = window.innerWidth;
  const clipped = (rect, el) => {
    for (let a = el.parentElement; a && a !== document.body; a = a.parentElement) {
      const style = getComputedStyle(a);
      if (style.overflowX !== "visible" || style.overflowY !== "visible") {
        const box = a.getBoundingClientRect();
        if (rect.left < box.left - 1 || rect.right > box.right + 1) return a;
      }
    }
    return null;
  };
  const name = (el) => el.tagName.toLowerCase() + (el.className ? "." + String(el.className).split(" ").join(".") : "");
  document.querySelectorAll("main table").forEach((table, t) => {
    const details = table.closest("details");
    if (details && !details.open) return;
    const title = (table.closest("section")?.querySelector("h2, h3")?.textContent || `table ${t + 1}`).trim();
    const headers = [...(table.tHead?.rows[0]?.cells || [])].map((th) => th.textContent.trim() || "(unnamed)");
    for (const row of table.tBodies[0]?.rows || []) {
      let col = 0;
      for (const cell of row.cells) {
        const header = headers[col] || `column ${col + 1}`;
        const span = cell.colSpan;
        col += span;
        if (span !== 1) continue;
        const where = `${title}: column "${header}"`;
        const box = cell.getBoundingClientRect();
        const style = getComputedStyle(cell);
        if (style.display === "none" || style.visibility === "hidden" || box.width < 1 || box.height < 1) {
          problems.push(`${where} is hidden`);
          continue;
        }
        const range = document.createRange();
        range.selectNodeContents(cell);
        const content = range.getBoundingClientRect();
        const rect = content.width > 0 ? content : box;
        if (rect.left < -1 || rect.right > width + 1) {
          problems.push(`${where} lies outside the window (${Math.round(rect.left)}..${Math.round(rect.right)} of ${width}px)`);
          continue;
        }
        const clip = clipped(rect, cell);
        if (clip) problems.push(`${where} is cut off by ${name(clip)}`);
      }
    }
  });
  for (const pill of document.querySelectorAll("main .pill")) {
    const lines = pill.getClientRects().length;
    const high = pill.getBoundingClientRect().height > parseFloat(getComputedStyle(pill).fontSize) * 2.2;
    if (lines > 1 || high) problems.push(`pill "${pill.textContent.trim()}" wraps onto several lines`);
  }
  return [...new Set(problems)];
}
"""


def _pages(data):
    users, pools, projects = data["users"], data["pools"], data["projects"]
    mine = ComputeRequest.objects.filter(requester=users["rita"])
    decided = mine.filter(status=Status.ALLOCATED).order_by("-gpus").first()
    pending_exec = mine.get(status=Status.PENDING_EXECUTIVE)
    # (persona or None, path, name)
    return [
        (None, "/accounts/login/", "sign in"),
        ("rita", "/", "overview"),
        ("rita", "/requests/", "requests"),
        ("rita", f"/requests/{decided.pk}/", "request detail"),
        ("rita", "/requests/new/", "new request"),
        ("rita", "/pools/", "pools"),
        ("rita", f"/pools/{pools['east/H100'].pk}/", "pool detail"),
        ("rita", "/projects/", "projects"),
        ("rita", f"/projects/{projects['Atlas'].pk}/", "project detail"),
        ("rita", "/notifications/", "notifications"),
        ("rlead", "/requests/inbox/", "approvals inbox"),
        ("exec", "/requests/inbox/", "executive inbox"),
        ("exec", f"/requests/{pending_exec.pk}/", "request to decide"),
        ("exec", "/balance/", "balance"),
        ("ops", "/ops/", "ops console"),
    ]


@pytest.fixture
def demo_lab(transactional_db, settings):
    settings.ALLOTMENT = {**settings.ALLOTMENT, "DEMO": True}
    data = load_demo()
    load_demo_requests(data)
    return data


@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["phone", "desktop"])
def test_every_main_page_fits_shows_every_column_is_clean_and_labelled(browse, demo_lab, viewport):
    # given a signed-in context per persona at this width
    sessions = {}
    problems = []

    for who, path, name in _pages(demo_lab):
        if who not in sessions:
            sessions[who] = browse(demo_lab["users"][who] if who else None, viewport)
        b = sessions[who]

        # when the page is opened
        visit = b.visit(path, name)

        # then it answers, fits the width, and its controls are named
        if visit.status != 200:
            problems.append(f"{name} ({path}) as {who}: status {visit.status}")
        problems += [f"{name} ({path}) as {who}: {p}" for p in b.page.evaluate(CHECK_PAGE)]
        # and every column of its tables can be read
        problems += [f"{name} ({path}) as {who}: {p}" for p in b.page.evaluate(CHECK_COLUMNS)]

    # and no page wrote an error to the console
    for b in sessions.values():
        problems += b.errors()
    assert problems == [], "\n".join(problems)


def test_the_phone_menu_opens_by_tap_and_by_keyboard(browse, requester):
    # given rita on the overview at phone width: the menu is folded away
    rita = browse(requester, PHONE)
    rita.visit("/", "menu folded")
    requests_link = rita.page.get_by_role("navigation", name="Main").get_by_role(
        "link", name="Requests"
    )
    expect(requests_link).to_be_hidden()

    # when she taps the menu button
    rita.page.locator("label[for=nav-toggle]").click()

    # then the links show
    expect(requests_link).to_be_visible()
    rita.shot("menu open")

    # and a keyboard user can fold and unfold it too
    toggle = rita.page.get_by_role("checkbox", name="Menu")
    toggle.focus()
    rita.page.keyboard.press("Space")
    expect(requests_link).to_be_hidden()
    rita.page.keyboard.press("Space")
    expect(requests_link).to_be_visible()


def test_the_desktop_menu_is_always_shown(browse, requester):
    # given rita at desktop width
    rita = browse(requester, DESKTOP)
    rita.visit("/", "overview")

    # then the links are shown and the menu button is not
    nav = rita.page.get_by_role("navigation", name="Main")
    expect(nav.get_by_role("link", name="Requests")).to_be_visible()
    expect(rita.page.locator("label[for=nav-toggle]")).to_be_hidden()
    expect(rita.page.get_by_role("checkbox", name="Menu")).to_be_hidden()


def test_the_page_checks_catch_what_they_look_for(browse, requester):
    # given rita on a clean page
    rita = browse(requester, PHONE)
    rita.visit("/requests/new/", "clean page")
    assert rita.page.evaluate(CHECK_PAGE) == [] and rita.errors() == []

    # when the page grows an inline style (refused by the CSP), a too-wide block, an unnamed
    # input and a description pointing nowhere
    rita.page.evaluate(
        """() => document.querySelector("main").insertAdjacentHTML("beforeend",
            '<div style="color: red">inline</div>'
            + '<pre>' + 'x'.repeat(200) + '</pre>'
            + '<input type="text" name="nameless">'
            + '<textarea aria-label="Notes" aria-describedby="nowhere"></textarea>')"""
    )
    rita.shot("broken page")

    # then every check reports it
    problems = rita.page.evaluate(CHECK_PAGE)
    assert any(p.startswith("scrolls sideways") for p in problems), problems
    assert "input[name=nameless] has no accessible name" in problems
    assert 'textarea aria-describedby="nowhere" points nowhere' in problems
    for _ in range(20):  # console events arrive asynchronously
        if any("Content Security Policy" in e for e in rita.errors()):
            break
        rita.page.wait_for_timeout(100)
    assert any("Content Security Policy" in e for e in rita.errors()), rita.errors()


def test_the_column_check_catches_what_it_looks_for(browse, requester):
    # given rita on a page with a table
    rita = browse(requester, PHONE)
    rita.visit("/pools/", "clean table")
    assert rita.page.evaluate(CHECK_COLUMNS) == []

    # when tables grow a hidden column, a column scrolled out of its box, a column past the
    # window's edge, and a pill squeezed onto three lines
    rita.page.evaluate(
        """() => document.querySelector("main").insertAdjacentHTML("beforeend",
            '<section><h2>Hidden</h2><table><thead><tr><th>A</th><th class="hide-sm">B</th></tr></thead>'
            + '<tbody><tr><td>a</td><td class="hide-sm">b</td></tr></tbody></table></section>'
            + '<section><h2>Scrolled</h2><div class="table-wrap"><table><thead><tr><th>Wide</th><th>Far</th></tr></thead>'
            + '<tbody><tr><td><span class="pill">' + 'w'.repeat(20) + '</span></td><td>far</td></tr></tbody></table></div></section>'
            + '<section><h2>Outside</h2><table class="offscreen"><thead><tr><th>Edge</th></tr></thead>'
            + '<tbody><tr><td>edge</td></tr></tbody></table></section>'
            + '<p class="squeezed"><span class="pill">approved by a very long name</span></p>')"""
    )
    # (styles set through the CSSOM: the CSP refuses a <style> element)
    rita.page.evaluate(
        """() => {
            document.querySelector(".offscreen").style.cssText = "position: relative; left: 400px";
            document.querySelector(".offscreen").closest("section").previousElementSibling
                .querySelector(".table-wrap").style.width = "150px";
            document.querySelector(".squeezed .pill").style.cssText = "white-space: normal; width: 4em";
            document.querySelectorAll("td.hide-sm").forEach((td) => { td.style.display = "none"; });
        }"""
    )
    rita.shot("broken tables")

    # then each one is reported
    problems = rita.page.evaluate(CHECK_COLUMNS)
    assert 'Hidden: column "B" is hidden' in problems, problems
    assert 'Scrolled: column "Far" is cut off by div.table-wrap' in problems, problems
    assert any(p.startswith('Outside: column "Edge" lies outside the window') for p in problems)
    assert 'pill "approved by a very long name" wraps onto several lines' in problems, problems
