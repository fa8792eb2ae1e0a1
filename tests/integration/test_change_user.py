"""COM_CHANGE_USER through credproxy: the character set the client names is the session's, and a
client that answers with another auth plugin is switched, as a server would."""

import os
import subprocess

from harness import ROOT, ProxyTestCase, main


def program():
    path = os.environ.get("CREDPROXY_CHANGE_USER_CHARSET",
                          str(ROOT / "build" / "tests" / "integration" / "change_user_charset"))
    if not os.access(path, os.X_OK):
        raise AssertionError("%s is not built" % path)
    return path


class ChangeUserCharset(ProxyTestCase):
    def run_program(self, port, user, password):
        p = subprocess.run([program(), "127.0.0.1", str(port), user, password, "app"],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        return p.stdout.strip()

    def test_gbk_after_change_user_is_not_an_injection(self):
        secret = self.fixture.secret()
        direct = self.run_program(self.fixture.port, secret["username"], secret["password"])
        self.assertEqual(direct, "rows=0 charset=gbk", "the program itself is wrong")
        proxy = self.start_proxy()
        self.assertEqual(self.run_program(proxy.port, "anyone", ""), direct)


class ChangeUserPlugins(ProxyTestCase):
    """mariadb CLI logins that start with another plugin (MySQL 8 clients' default)."""

    def test_login_with_each_client_plugin(self):
        proxy = self.start_proxy()
        for plugin in ("caching_sha2_password", "sha256_password", "client_ed25519",
                       "mysql_native_password"):
            with self.subTest(plugin=plugin):
                out = self.cli_value("SELECT 40 + 2", port=proxy.port,
                                     extra=["--default-auth=" + plugin])
                self.assertEqual(out, "42")


if __name__ == "__main__":
    main()
