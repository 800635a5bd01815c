"""Drives headless Chromium through Debian's chromedriver over a list of steps, as a staff member
at a workstation would: open a page, log in (password and a TOTP code computed from the
enrolment URI), check what the page shows and hides, fill and submit forms, keep a value shown
once for a later step.

Usage: browser_steps.py BASE_URL < steps.json. A step is a one-key object:
  {"open": "/path"}                      navigate
  {"login": {"name", "password", "uri"}} open /login and submit name, password and TOTP code
  {"see": "text"} / {"not_see": "text"}  the page's visible text contains it / does not
  {"title": "text"}                      the page's title contains it
  {"path": "/login"}                     the current URL's path becomes this
  {"fill": {"form": action, "field": name, "value": v}}
                                         type into the input, or pick in the select, `name`
                                         of the form posting to `action`
  {"element": "css selector"}            the page has such an element
  {"click": "label"}                     press the button with this label (first match) and
                                         wait for the page it loads
  {"press": "label"}                     press the button with this label, staying on the page
  {"wait_see": "text"}                   the page's visible text comes to contain it
  {"virtual_authenticator": true}        a CTAP2 platform authenticator that verifies its user
  {"keep": {"id": element id, "as": v}}  remember the element's text as $v
  {"forget_session": true}               drop the cookies (another staff member's turn)
A string value "$v" stands for a kept value. Exits 1 naming the failed step and the page.
"""

import json
import sys
import urllib.parse

import pyotp
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.virtual_authenticator import VirtualAuthenticatorOptions
from selenium.webdriver.support.ui import Select, WebDriverWait

base = sys.argv[1].rstrip("/")
steps = json.load(sys.stdin)
kept = {}


def value(v):
    if isinstance(v, str) and v.startswith("$"):
        return kept[v[1:]]
    return v


def body_text(driver):
    return driver.find_element(By.TAG_NAME, "body").text


def wait_loaded(driver, before):
    """Waits until the page that replaced `before` has loaded (a positive sign, not a sleep)."""
    WebDriverWait(driver, 20).until(
        lambda d: d.find_element(By.TAG_NAME, "html").id != before
        and d.execute_script("return document.readyState") == "complete"
    )


def submit(driver, element):
    before = driver.find_element(By.TAG_NAME, "html").id
    element.click()
    wait_loaded(driver, before)


def code_for(uri):
    totp = pyotp.parse_uri(uri)
    return totp.now()


def run(driver, step):
    (kind, arg), = step.items()
    if kind == "open":
        driver.get(base + value(arg))
    elif kind == "login":
        driver.get(base + "/login")
        form = driver.find_element(By.CSS_SELECTOR, "form[action='/login']")
        form.find_element(By.NAME, "name").send_keys(value(arg["name"]))
        form.find_element(By.NAME, "password").send_keys(value(arg["password"]))
        form.find_element(By.NAME, "code").send_keys(code_for(value(arg["uri"])))
        submit(driver, form.find_element(By.CSS_SELECTOR, "button[type=submit]"))
    elif kind == "see":
        text = value(arg)
        if text not in body_text(driver):
            raise AssertionError(f"{text!r} not on the page")
    elif kind == "not_see":
        text = value(arg)
        if text in body_text(driver):
            raise AssertionError(f"{text!r} is on the page")
    elif kind == "title":
        if value(arg) not in driver.title:
            raise AssertionError(f"title is {driver.title!r}")
    elif kind == "path":
        # A redirect may still be under way (the login page's meta refresh).
        want = value(arg)
        WebDriverWait(driver, 20).until(
            lambda d: urllib.parse.urlparse(d.current_url).path == want
            and d.execute_script("return document.readyState") == "complete"
        )
    elif kind == "fill":
        form = driver.find_element(By.CSS_SELECTOR, f"form[action='{arg['form']}']")
        field = form.find_element(By.NAME, arg["field"])
        if field.tag_name == "select":
            Select(field).select_by_value(value(arg["value"]))
        else:
            field.clear()
            field.send_keys(value(arg["value"]))
    elif kind in ("click", "press"):
        label = value(arg)
        buttons = [b for b in driver.find_elements(By.TAG_NAME, "button") if b.text == label]
        if not buttons:
            raise AssertionError(f"no button {label!r}")
        if kind == "click":
            submit(driver, buttons[0])
        else:
            buttons[0].click()
    elif kind == "wait_see":
        text = value(arg)
        WebDriverWait(driver, 20).until(lambda d: text in body_text(d))
    elif kind == "virtual_authenticator":
        options = VirtualAuthenticatorOptions()
        options.protocol = VirtualAuthenticatorOptions.Protocol.CTAP2
        options.transport = VirtualAuthenticatorOptions.Transport.INTERNAL
        options.has_resident_key = True
        options.has_user_verification = True
        options.is_user_consenting = True
        options.is_user_verified = True
        driver.add_virtual_authenticator(options)
    elif kind == "element":
        driver.find_element(By.CSS_SELECTOR, value(arg))
    elif kind == "keep":
        kept[arg["as"]] = driver.find_element(By.ID, arg["id"]).text.strip()
    elif kind == "forget_session":
        driver.delete_all_cookies()
    else:
        raise AssertionError(f"unknown step {kind}")


def main():
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    # The gateway's certificate is self-signed, created at its first start.
    options.accept_insecure_certs = True
    service = Service(executable_path="/usr/bin/chromedriver")
    driver = webdriver.Chrome(options=options, service=service)
    try:
        for n, step in enumerate(steps):
            try:
                run(driver, step)
            except (AssertionError, WebDriverException, KeyError) as e:
                print(f"step {n} {json.dumps(step)} failed: {e}", file=sys.stderr)
                print(f"at {driver.current_url}, title {driver.title!r}:", file=sys.stderr)
                print(body_text(driver)[:3000], file=sys.stderr)
                sys.exit(1)
            print(f"step {n} ok: {json.dumps(step)}", file=sys.stderr)
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
