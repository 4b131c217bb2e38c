#!/usr/bin/env python3
"""A headless Chromium driven over the DevTools protocol, for the dashboard's browser tests.

Chromium speaks the protocol over a pipe (--remote-debugging-pipe: it reads commands from fd 3
and writes answers to fd 4, each message JSON ending in a NUL byte). This driver opens one page
and takes commands from its standard input, one JSON object per line, answering each with one
JSON line on its standard output:

  {"cmd": "goto", "url": "..."}                     -> {"ok": true}
  {"cmd": "eval", "expr": "..."}                    -> {"ok": true, "value": ...}
  {"cmd": "wait", "expr": "...", "timeout_s": 20}   -> {"ok": true, "value": ...} once truthy
                                                       (a boolean or a value; a DOM node reads as {})
  {"cmd": "screenshot", "path": "..."}              -> {"ok": true}
  {"cmd": "quit"}

Errors answer {"ok": false, "error": "..."}. Only the standard library is used.
"""

import base64
import json
import os
import subprocess
import sys
import tempfile
import time


class Browser:
    def __init__(self, binary):
        # A fresh profile: no state between tests, and no calls home at start.
        self.profile = tempfile.TemporaryDirectory(prefix='stargrid-chromium-')
        to_chrome_r, self.to_chrome = os.pipe()
        self.from_chrome, from_chrome_w = os.pipe()
        # The shell puts the pipe's ends where Chromium looks for them.
        command = (
            f'exec {binary} --headless --no-sandbox --disable-gpu --no-first-run '
            '--disable-dev-shm-usage --disable-quic --disable-background-networking '
            '--disable-component-update --disable-sync '
            f'--user-data-dir={self.profile.name} '
            '--remote-debugging-pipe --window-size=1400,1000 '
            f'about:blank 3<&{to_chrome_r} 4>&{from_chrome_w}'
        )
        self.proc = subprocess.Popen(
            ['sh', '-c', command],
            pass_fds=(to_chrome_r, from_chrome_w),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self.buffer = b''
        self.next_id = 0
        self.session = None
        target = self.call('Target.createTarget', {'url': 'about:blank'})['targetId']
        self.session = self.call('Target.attachToTarget', {'targetId': target, 'flatten': True})['sessionId']
        self.call('Page.enable', {})
        self.call('Runtime.enable', {})

    def read_message(self):
        while b'\0' not in self.buffer:
            chunk = os.read(self.from_chrome, 1 << 16)
            if not chunk:
                raise RuntimeError('chromium closed the pipe')
            self.buffer += chunk
        message, self.buffer = self.buffer.split(b'\0', 1)
        return json.loads(message)

    def call(self, method, params):
        self.next_id += 1
        message = {'id': self.next_id, 'method': method, 'params': params}
        if self.session:
            message['sessionId'] = self.session
        os.write(self.to_chrome, json.dumps(message).encode() + b'\0')
        while True:
            answer = self.read_message()
            if answer.get('id') == self.next_id:
                if 'error' in answer:
                    raise RuntimeError(f"{method}: {answer['error'].get('message')}")
                return answer.get('result', {})

    def evaluate(self, expr):
        result = self.call('Runtime.evaluate', {'expression': expr, 'returnByValue': True, 'awaitPromise': True})
        if 'exceptionDetails' in result:
            raise RuntimeError('script: ' + json.dumps(result['exceptionDetails'].get('exception', {}).get('description')))
        return result.get('result', {}).get('value')

    def goto(self, url):
        self.call('Page.navigate', {'url': url})

    def wait(self, expr, timeout_s):
        deadline = time.time() + timeout_s
        last = None
        while time.time() < deadline:
            try:
                last = self.evaluate(expr)
                if last:
                    return last
            except RuntimeError as e:
                last = str(e)
            time.sleep(0.1)
        raise RuntimeError(f'timed out after {timeout_s} s waiting for {expr} (last: {last})')

    def screenshot(self, path):
        data = self.call('Page.captureScreenshot', {'format': 'png'})['data']
        with open(path, 'wb') as f:
            f.write(base64.b64decode(data))

    def quit(self):
        try:
            self.call('Browser.close', {})
        except Exception:
            pass
        self.proc.kill()
        self.proc.wait()
        self.profile.cleanup()


def main():
    browser = Browser(os.environ.get('STARGRID_CHROMIUM', 'chromium'))
    for line in sys.stdin:
        command = json.loads(line)
        try:
            cmd = command['cmd']
            value = None
            if cmd == 'goto':
                browser.goto(command['url'])
            elif cmd == 'eval':
                value = browser.evaluate(command['expr'])
            elif cmd == 'wait':
                value = browser.wait(command['expr'], command.get('timeout_s', 20))
            elif cmd == 'screenshot':
                browser.screenshot(command['path'])
            elif cmd == 'quit':
                break
            else:
                raise RuntimeError(f'unknown command {cmd}')
            print(json.dumps({'ok': True, 'value': value}), flush=True)
        except Exception as e:  # answered, not raised: the test reports it
            print(json.dumps({'ok': False, 'error': str(e)}), flush=True)
    browser.quit()


if __name__ == '__main__':
    main()
