"""Signals an operator may send: SIGHUP, SIGUSR1 and SIGUSR2 never end credproxy (their default
action would, silently); each is logged, clients keep working, and SIGTERM still stops it
cleanly (the harness checks exit status 0)."""

import os
import signal
import time

from harness import ProxyTestCase, connect, main, scalar


class OtherSignals(ProxyTestCase):
    def test_hup_usr1_usr2_are_logged_and_ignored(self):
        proxy = self.start_proxy()
        conn = connect(proxy.port)
        self.assertEqual(scalar(conn, "SELECT 1"), 1)
        for sig, words in ((signal.SIGHUP, "received SIGHUP"), (signal.SIGUSR1, "received SIGUSR1"),
                           (signal.SIGUSR2, "received signal %d" % signal.SIGUSR2)):
            with self.subTest(signal=sig.name):
                os.kill(proxy.proc.pid, sig)
                self.assertTrue(proxy.wait_log(words), "no log line for %s" % sig.name)
                time.sleep(0.2)
                self.assertTrue(proxy.alive(), "%s ended credproxy" % sig.name)
                self.assertEqual(scalar(conn, "SELECT 2"), 2)
                self.assertEqual(scalar(connect(proxy.port), "SELECT 3"), 3)


if __name__ == "__main__":
    main()
