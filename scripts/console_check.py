"""The web console in a real browser (headless Chromium through chromedriver and Selenium)
against the embedded default: sign in with the admin token, compare the numbers on the pages
with the admin API's JSON, follow the deep links, create a key, reinstate an account put under
review through the API, sign out, then check that a reader key sees its own organization only
and that a model-owner key sees its models' reviews. Fails on any JavaScript error (browser log
level SEVERE). Screenshots of every page go to the output directory.

Run by scripts/test.sh as: console_check.py PATH_TO_TOLLGATE_BINARY OUTPUT_DIR
"""
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import embedded
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait


class Api:
    def __init__(self, base, token):
        self.base, self.token = base, token

    def call(self, method, path, body=None, accept="application/json", token=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Authorization", "Bearer " + (token or self.token))
        req.add_header("Accept", accept)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=30) as r:
            raw = r.read()
        return raw.decode() if accept != "application/json" else json.loads(raw)

    def get(self, path, **kw):
        return self.call("GET", path, **kw)

    def post(self, path, body, **kw):
        return self.call("POST", path, body, **kw)


def chat(base, key, content, model="gpt-4o-mini"):
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": content}]}).encode()
    req = urllib.request.Request(base + "/v1/chat/completions", data=body, method="POST")
    req.add_header("Authorization", "Bearer " + key)
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


class Browser:
    def __init__(self, base, shots):
        self.base, self.shots = base, shots
        opts = webdriver.ChromeOptions()
        for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                    "--window-size=1280,1000", "--no-first-run", "--disable-extensions"):
            opts.add_argument(arg)
        binary = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
        if binary:
            opts.binary_location = binary
        opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        driver_path = shutil.which("chromedriver") or "/usr/bin/chromedriver"
        self.d = webdriver.Chrome(service=Service(driver_path), options=opts)
        self.d.set_page_load_timeout(60)
        # Network errors the test provokes on purpose (403/404 pages): path suffixes.
        self.expected_network_errors = []

    def get(self, path):
        self.d.get(self.base + path)
        self.check_log()

    def path(self):
        return self.d.current_url[len(self.base):]

    def text(self, css):
        return self.d.find_element(By.CSS_SELECTOR, css).text

    def has(self, css):
        return len(self.d.find_elements(By.CSS_SELECTOR, css)) > 0

    def shot(self, name):
        # The whole page, not only the viewport.
        height = int(self.d.execute_script("return document.documentElement.scrollHeight"))
        self.d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": 1280, "height": max(600, min(height, 4000)), "deviceScaleFactor": 1, "mobile": False})
        self.d.save_screenshot(os.path.join(self.shots, name + ".png"))
        # A small copy of the top of the page (what README shows).
        self.d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": 1280, "height": max(600, min(height, 1000)), "deviceScaleFactor": 0.6, "mobile": False})
        os.makedirs(os.path.join(self.shots, "small"), exist_ok=True)
        self.d.save_screenshot(os.path.join(self.shots, "small", name + ".png"))
        self.d.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
        self.check_log()

    def check_log(self):
        for entry in self.d.get_log("browser"):
            if entry.get("level") != "SEVERE":
                continue
            msg = entry.get("message", "")
            if entry.get("source") == "network" and any(e in msg for e in self.expected_network_errors):
                continue
            raise SystemExit(f"browser error on {self.d.current_url}: {entry}")

    def click(self, element):
        """Clicks a link or submit button and waits for the next page to load."""
        element.click()

        def gone(_driver):
            # Stale once the old page is replaced. While Chrome swaps documents the old node
            # can also answer "Node with given id does not belong to the document" (a plain
            # WebDriverException rather than StaleElementReferenceException): gone as well.
            try:
                element.is_enabled()
                return False
            except WebDriverException:
                return True

        WebDriverWait(self.d, 30).until(gone)
        WebDriverWait(self.d, 30).until(
            lambda d: d.execute_script("return document.readyState") == "complete")
        self.check_log()

    def sign_in(self, token):
        self.d.find_element(By.ID, "token").send_keys(token)
        self.click(self.d.find_element(By.ID, "signin"))

    def cookie(self):
        c = self.d.get_cookie("tollgate_console")
        assert c is not None, "no session cookie"
        assert c["httpOnly"], c
        assert c.get("sameSite") == "Strict", c
        return c["value"]

    def fetch(self, path, cookie):
        """Fetches a console URL outside the browser with the session cookie (downloads)."""
        req = urllib.request.Request(self.base + path)
        req.add_header("Cookie", "tollgate_console=" + cookie)
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.headers, r.read().decode()

    def quit(self):
        self.d.quit()


def expect(cond, what):
    if not cond:
        raise SystemExit("console check failed: " + what)
    print("ok   " + what)


def main():
    binary, shots = sys.argv[1], sys.argv[2]
    os.makedirs(shots, exist_ok=True)
    data = tempfile.mkdtemp()
    env = dict(os.environ, TOLLGATE_ADMIN_TOKEN="", NO_COLOR="1")
    log = open(os.path.join(shots, "server.log"), "w")
    proc, base = embedded.start(binary, data, env, stdout=log, stderr=subprocess.STDOUT)
    browser = None
    try:
        embedded.wait_healthy(base)
        admin = open(os.path.join(data, "admin-token")).read().strip()
        demo_key = open(os.path.join(data, "demo-key")).read().strip()
        api = Api(base, admin)
        month = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m")
        month_start = month + "-01T00:00:00Z"

        # Data: demo traffic, a second customer with traffic, a contract and a budget.
        orgs = api.get("/admin/v1/organizations")["data"]
        demo = next(o for o in orgs if o["name"] == "demo")["id"]
        for i in range(5):
            chat(base, demo_key, f"Hello number {i}!")
        chat(base, demo_key, "A bigger model, please.", model="gpt-4o")
        rival = api.post("/admin/v1/organizations", {"name": "rival-labs"})["id"]
        rproj = api.post(f"/admin/v1/organizations/{rival}/projects", {"name": "main"})["id"]
        rkey = api.post(f"/admin/v1/projects/{rproj}/keys", {"name": "ci"})["key"]
        for i in range(3):
            chat(base, rkey, f"Rival request {i}")
        # Six months of imported history, so the invoices and the revenue chart have cents.
        now = datetime.datetime.now(datetime.timezone.utc)
        events = []
        for back in range(6):
            y, m = now.year, now.month - back
            while m < 1:
                y, m = y - 1, m + 12
            stamp = f"{y:04d}-{m:02d}-01T12:00:00Z"
            for org, scale in ((demo, 3), (rival, 2)):
                events.append({"id": f"hist-{org}-{y}-{m}", "timestamp": stamp, "organization": org,
                               "model": "gpt-4o", "input_tokens": (6 - back) * scale * 400_000,
                               "cached_input_tokens": (6 - back) * scale * 100_000,
                               "output_tokens": (6 - back) * scale * 150_000})
        imported = api.post("/admin/v1/usage/events", {"events": events})
        expect(imported["accepted"] == len(events), "history imported")
        api.call("PUT", f"/admin/v1/organizations/{demo}/contract",
                 {"discount_percent": "10", "monthly_commitment": "50", "effective_from": events[-1]["timestamp"].replace("T12", "T00")})
        api.call("PUT", f"/admin/v1/organizations/{demo}/budget", {"monthly_limit": "50"})
        api.post(f"/admin/v1/organizations/{rival}/review", {"reason": "Harvesting pattern reported"})
        reader = api.post(f"/admin/v1/organizations/{demo}/reader-keys", {"name": "finance"})["key"]

        browser = Browser(base, shots)

        # A deep link before signing in goes through the sign-in page and comes back.
        invoice_path = f"/console/invoices/{demo}/{month}"
        browser.get(invoice_path)
        expect(browser.path().startswith("/console/login"), "a deep link asks to sign in first")
        browser.shot("01-sign-in")
        # The JavaScript-error check itself works: a thrown error shows up as SEVERE.
        browser.d.execute_script("setTimeout(function () { throw new Error('self-test'); }, 0);")
        time.sleep(0.3)
        expect(any(e["level"] == "SEVERE" and "self-test" in e["message"] for e in browser.d.get_log("browser")),
               "a JavaScript error would fail this check")
        browser.sign_in(admin)
        expect(browser.path() == invoice_path, "after sign-in the deep link opens")
        cookie = browser.cookie()
        expect(admin not in browser.d.current_url and admin not in browser.d.page_source,
               "the admin token is in no URL and no page")

        inv = api.get(f"/admin/v1/invoices/{demo}/{month}")
        expect(browser.text("#total") == "$" + inv["total"], f"invoice total {inv['total']} as the API says")
        expect(browser.text("#discount") == "−$" + inv["discount"], "invoice discount as the API says")
        expect(browser.text("#shortfall") == "$" + inv["commitment_shortfall"], "invoice shortfall as the API says")
        rows = browser.d.find_elements(By.CSS_SELECTOR, "#lines tbody tr")
        expect(len(rows) == len(inv["lines"]) and len(rows) >= 2, "one row per invoice line")
        browser.shot("05-invoice")
        headers, csv = browser.fetch(browser.d.find_element(By.ID, "csv").get_attribute("href")[len(base):], cookie)
        api_csv = api.get(f"/admin/v1/invoices/{demo}/{month}", accept="text/csv")
        expect(csv == api_csv and "text/csv" in headers["Content-Type"], "CSV download equals the API's CSV")

        # Overview: this month's figures equal the API's.
        browser.get("/console/")
        rev = api.get(f"/admin/v1/reports/revenue?from={month}&to={month}")["months"][-1]
        expect(browser.text("#revenue") == "$" + rev["revenue"], f"revenue {rev['revenue']} as the API says")
        expect(browser.text("#run-rate") == "$" + rev["run_rate"], "run rate as the API says")
        requests = tokens = 0
        for org in (demo, rival):
            for r in api.get(f"/admin/v1/usage?organization={org}&from={month_start}")["data"]:
                requests += r["requests"]
                tokens += r["input_tokens"] + r["output_tokens"]
        expect(browser.text("#requests") == f"{requests:,}", f"{requests} requests as the API says")
        expect(browser.text("#tokens") == f"{tokens:,}", f"{tokens} tokens as the API says")
        expect(browser.has("#revenue-chart rect"), "revenue chart drawn")
        expect(len(browser.d.find_elements(By.CSS_SELECTOR, "#customers tbody tr")) == len(rev["customers"]),
               "one row per customer")
        expect("openai" in browser.text("#payouts"), "owner payouts listed")
        browser.shot("02-overview")

        # Organizations: the tree links to each organization's page.
        browser.get("/console/organizations")
        expect("demo" in browser.text("#org-tree") and "rival-labs" in browser.text("#org-tree"), "tree lists both")
        browser.shot("03-organizations")
        browser.click(browser.d.find_element(By.LINK_TEXT, "demo"))
        expect(browser.path() == f"/console/organizations/{demo}", "tree link opens the organization")
        usage = {r["model"]: r for r in api.get(f"/admin/v1/usage?organization={demo}&from={month_start}")["data"]}
        cells = {tr.find_elements(By.TAG_NAME, "td")[0].text: tr.find_elements(By.TAG_NAME, "td")
                 for tr in browser.d.find_elements(By.CSS_SELECTOR, "#usage tbody tr")}
        for model, row in usage.items():
            expect(cells[model][1].text == f"{row['requests']:,}" and cells[model][5].text == "$" + row["cost"],
                   f"usage of {model} as the API says")
        expect(browser.has("#budgets") and browser.has("#contract"), "budget and contract shown")
        browser.d.find_element(By.ID, "key-name").send_keys("from-console")
        browser.click(browser.d.find_element(By.ID, "create-key"))
        secret = browser.text("#new-key code")
        expect(secret.startswith("tg-"), "a new key's secret is shown once")
        expect(chat(base, secret, "New key works")["usage"]["completion_tokens"] > 0, "the new key works")
        browser.shot("04-organization")
        browser.click(browser.d.find_element(By.PARTIAL_LINK_TEXT, f"Invoice {month}"))
        expect(browser.path() == invoice_path, "organization page links to this month's invoice")

        # Reviews: reinstate the account put under review through the API.
        browser.get("/console/reviews")
        expect(browser.has(f"#review-{rival}"), "the account under review is listed")
        expect("under review" in browser.text(f"#review-{rival}"), "its state is shown")
        browser.shot("06-reviews")
        browser.get(f"/console/reviews/{rival}")
        expect(browser.has("#extent"), "evidence page shows the extent")
        browser.shot("07-evidence")
        browser.get("/console/reviews")
        form = browser.d.find_element(By.CSS_SELECTOR, f"form[action='/console/reviews/{rival}/reinstate']")
        form.find_element(By.NAME, "reason").send_keys("Checked with the customer")
        browser.click(browser.d.find_element(By.ID, f"reinstate-{rival}"))
        risk = api.get(f"/admin/v1/organizations/{rival}/risk")
        expect(risk["state"] == "active", "reinstated: the API shows the account active")
        expect(chat(base, rkey, "back again")["usage"]["completion_tokens"] > 0, "its key works again")
        audit = api.get(f"/admin/v1/audit?organization={rival}")["data"]
        expect(audit[-1]["action"] == "reinstate" and audit[-1]["reason"] == "Checked with the customer",
               "the decision is in the audit log")
        browser.get("/console/audit")
        expect("Checked with the customer" in browser.text("#audit"), "audit page shows the decision")
        browser.shot("08-audit")
        browser.get("/console/providers")
        expect("gpt-4o-mini" in browser.text("#providers") and "closed" in browser.text("#providers"),
               "providers with breaker state")
        browser.shot("09-providers")

        # A forged action without the CSRF token is refused.
        req = urllib.request.Request(f"{base}/console/reviews/{rival}/terminate", data=b"reason=x", method="POST")
        req.add_header("Cookie", "tollgate_console=" + cookie)
        req.add_header("Content-Type", "application/x-www-form-urlencoded")
        try:
            urllib.request.urlopen(req, timeout=10)
            raise SystemExit("an action without the CSRF token was accepted")
        except urllib.error.HTTPError as e:
            expect(e.code == 403, "an action without the CSRF token is refused (403)")
        expect(api.get(f"/admin/v1/organizations/{rival}/risk")["state"] == "active", "and changed nothing")

        # Sign out: the session ends.
        browser.click(browser.d.find_element(By.CSS_SELECTOR, "form.signout button"))
        expect(browser.path().startswith("/console/login"), "sign-out returns to the sign-in page")
        browser.get("/console/")
        expect(browser.path().startswith("/console/login"), "after sign-out the console asks to sign in")

        # A reader key sees its organization only.
        browser.sign_in(reader)
        expect("reader" in browser.text("#who"), "signed in as a reader")
        expect(browser.text("#total" if browser.has("#total") else "#revenue") == "$" + inv["total"],
               "reader overview shows the organization's invoice total")
        browser.shot("10-reader-overview")
        browser.get("/console/organizations")
        expect("rival-labs" not in browser.text("#org-tree") and "demo" in browser.text("#org-tree"),
               "reader's tree has its organization only")
        expect(not browser.has("#create-key"), "reader page has no admin actions")
        browser.expected_network_errors = [rival, "/console/reviews", "/console/audit"]
        browser.get(f"/console/organizations/{rival}")
        expect("No organization" in browser.text("#error"), "reader cannot open another organization")
        browser.shot("11-reader-denied")
        browser.get(f"/console/invoices/{rival}/{month}")
        expect("No organization" in browser.text("#error"), "reader cannot open another organization's invoice")
        browser.get("/console/reviews")
        expect(browser.has("#error"), "reader has no reviews page")
        browser.get(f"/console/organizations/{demo}")
        expect(not browser.has("#create-key") and browser.has("#usage"), "reader sees usage, no key actions")
        browser.click(browser.d.find_element(By.CSS_SELECTOR, "form.signout button"))

        # A model-owner key sees its models' reviews and evidence.
        api.post(f"/admin/v1/organizations/{rival}/review", {"reason": "Owner asked", "owner": "openai"})
        owner_key = api.post("/admin/v1/owners/openai/keys", {"name": "t&s"})["key"]
        browser.expected_network_errors = []
        browser.get("/console/login")
        browser.sign_in(owner_key)
        expect(browser.path() == "/console/reviews", "owner lands on reviews")
        expect(rival in browser.text("#owner-reviews"), "owner sees the review on its models")
        browser.shot("12-owner-reviews")
        browser.click(browser.d.find_element(By.LINK_TEXT, rival))
        expect(browser.has("#extent") and not browser.has(f"#reinstate-{rival}"),
               "owner sees evidence, no admin actions")
        print(f"console check passed; screenshots in {shots}")
    finally:
        if browser is not None:
            browser.quit()
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
