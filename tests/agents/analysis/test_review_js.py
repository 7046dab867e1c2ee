"""Review rules for JavaScript and TypeScript: each one hits a real diff's line and passes its near miss."""
from __future__ import annotations

import pytest

from agents.analysis.review import added_lines, review_diff, rule_findings
from agents.findings import Severity


def diff_of(path: str, *lines: str) -> str:
    body = "".join(f"+{line}\n" for line in lines)
    return (f"diff --git a/{path} b/{path}\n--- a/{path}\n+++ b/{path}\n"
            f"@@ -3,2 +3,{len(lines) + 2} @@ export function handler(req, res) {{\n"
            f"   const id = req.params.id;\n{body}   return res;\n")


CASES = [  # rule, the line that hits, its near miss (same intent, written safely or not code)
    ("eval-call", "const value = eval(req.query.expr);", "const value = JSON.parse(req.query.expr);"),
    ("eval-call", "const f = new Function('a', body);", "const f = (a) => a + 1; // no new Function( here"),
    ("command-injection", "exec(`convert ${file} out.png`, done);", "execFile('convert', [file, 'out.png'], done);"),
    ("command-injection", "child_process.execSync('rm -rf ' + dir);", "const m = /(\\d+)/.exec('id ' + dir);"),
    ("shell-true", "spawn(cmd, args, { shell: true });", "spawn(cmd, args, { shell: false });"),
    ("xss-dangerously-set-inner-html", "<div dangerouslySetInnerHTML={{ __html: bio }} />", "<div>{bio}</div>"),
    ("xss-inner-html", "el.innerHTML = comment.text;", "if (el.innerHTML === '') el.textContent = comment.text;"),
    ("tls-verify-off", "const agent = new https.Agent({ rejectUnauthorized: false });",
     "const agent = new https.Agent({ rejectUnauthorized: true, ca });"),
    ("tls-verify-off", "process.env.NODE_TLS_REJECT_UNAUTHORIZED = '0';", "'set NODE_TLS_REJECT_UNAUTHORIZED = 0',"),
    ("insecure-random", "const token = Math.random().toString(36).slice(2);",
     "const jitter = Math.random() * 100;"),
    ("logs-sensitive-data", "console.log('login', req.body);", "console.log('login for', user.name);"),
    ("logs-sensitive-data", "console.info(`password is ${password}`);", "logger.audit('password changed');"),
    ("sql-injection", "db.query(`SELECT * FROM users WHERE id = ${id}`);",
     "db.query('SELECT * FROM users WHERE id = $1', [id]);"),
    ("sql-injection", "await pool.query(\"DELETE FROM t WHERE name = '\" + name + \"'\");",
     "await pool.query(sql`DELETE FROM t WHERE name = ${name}`);"),
    ("debugger-left-in", "  debugger;", "  const debuggerEnabled = false;"),
    ("todo-added", "  return total; // TODO: taxes", "  return total; // taxes are added by the caller"),
]


@pytest.mark.parametrize("rule, hit, miss", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_each_rule_names_file_line_and_advice_and_spares_its_near_miss(rule: str, hit: str, miss: str) -> None:
    findings = rule_findings(added_lines(diff_of("web/src/handler.ts", "const a = 1;", hit)))
    mine = [f for f in findings if f.rule == rule]
    assert [(f.file, f.line) for f in mine] == [("web/src/handler.ts", 5)]
    assert mine[0].message and mine[0].suggestion and mine[0].tool == "review"
    assert [f.rule for f in rule_findings(added_lines(diff_of("web/src/handler.ts", miss)))] == []


@pytest.mark.parametrize("line", [
    "// eval(req.body) would be a hole; we parse instead",
    "/* el.innerHTML = x */",
    " * exec(`ls ${dir}`) is what we avoid",
    "  'never use Math.random() for the csrf nonce',",
    '  "db.query(`SELECT ${x}`)"',
])
def test_comments_and_string_only_lines_are_not_code(line: str) -> None:
    assert rule_findings(added_lines(diff_of("web/src/notes.js", line))) == []


def test_js_rules_stay_off_python_and_python_rules_stay_off_js() -> None:
    py = rule_findings(added_lines(diff_of("api/app.py", "el.innerHTML = x", "db.query(`SELECT ${x}`)")))
    js = rule_findings(added_lines(diff_of("web/app.js", "print(x)", "breakpoint()", "import pdb")))
    assert py == [] and js == []


@pytest.mark.parametrize("ext", ["js", "jsx", "mjs", "cjs", "ts", "tsx"])
def test_every_js_and_ts_extension_is_checked_but_not_node_modules(ext: str) -> None:
    assert [f.rule for f in rule_findings(added_lines(diff_of(f"web/a.{ext}", "eval(x);")))] == ["eval-call"]
    assert rule_findings(added_lines(diff_of(f"web/node_modules/lib/a.{ext}", "eval(x);"))) == []


def test_the_review_of_a_node_change_reports_them_with_severities() -> None:
    diff = diff_of("web/server.js", "debugger;", "res.send(eval(req.query.q));") + \
        diff_of("web/src/token.js", "export const token = () => Math.random().toString(36);")
    result = review_diff(diff, llm=None)
    assert [(f.rule, f.file, f.line, f.severity) for f in result.findings] == [
        ("debugger-left-in", "web/server.js", 4, Severity.ERROR),
        ("eval-call", "web/server.js", 5, Severity.WARNING),
        ("insecure-random", "web/src/token.js", 4, Severity.WARNING)]
    assert result.source == "rules"
