"""Which files are migrations, of which tool, and which statements destroy data (pure tables)."""
from __future__ import annotations

import pytest

from agents.migrations.detect import ADVICE, EXPAND_CONTRACT, destructive_statements, find, owner, tool_of

ALEMBIC = '''"""drop the email column"""
from alembic import op
import sqlalchemy as sa

revision = "002"
down_revision = "001"


def upgrade():
    op.add_column("users", sa.Column("contact", sa.String()))
    op.drop_column("users", "email")
    op.alter_column(
        "users", "name",
        new_column_name="full_name",
    )
    op.alter_column("users", "age", type_=sa.BigInteger())


def downgrade():
    op.drop_table("audit")
    op.add_column("users", sa.Column("email", sa.String()))
'''

ALEMBIC_CREATE = '''revision: str = "001"
down_revision = None


def upgrade() -> None:
    op.create_table("audit", sa.Column("id", sa.Integer()))


def downgrade() -> None:
    op.drop_table("audit")
'''

DJANGO = '''from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("shop", "0001_initial")]
    operations = [
        migrations.RemoveField(model_name="order", name="coupon"),
        migrations.RenameField(model_name="order", old_name="total", new_name="amount"),
        migrations.DeleteModel(name="Coupon"),
        migrations.RenameModel(old_name="Basket", new_name="Cart"),
        migrations.AddField(model_name="order", name="note", field=models.TextField(default="")),
    ]
'''

SQL = '''-- DROP TABLE in a comment is not a statement
/* neither is
   DROP TABLE here */
CREATE TABLE orders (id serial primary key);
ALTER TABLE users DROP COLUMN legacy;
ALTER TABLE users RENAME COLUMN nm TO name;
ALTER TABLE users ALTER COLUMN age TYPE bigint;
TRUNCATE TABLE sessions;
DROP TABLE old_carts;  -- gone
'''

LIQUIBASE_XML = '''<?xml version="1.0"?>
<databaseChangeLog xmlns="http://www.liquibase.org/xml/ns/dbchangelog">
  <changeSet id="1" author="ann">
    <createTable tableName="orders"><column name="id" type="int"/></createTable>
    <rollback>
      <dropTable tableName="orders"/>
    </rollback>
  </changeSet>
  <changeSet id="2" author="ann">
    <dropColumn tableName="users" columnName="legacy"/>
    <renameColumn tableName="users" oldColumnName="nm" newColumnName="name"/>
    <modifyDataType tableName="users" columnName="age" newDataType="bigint"/>
  </changeSet>
</databaseChangeLog>
'''

LIQUIBASE_YAML = '''databaseChangeLog:
  - changeSet:
      id: 1
      changes:
        - createTable:
            tableName: orders
      rollback:
        - dropTable:
            tableName: orders
  - changeSet:
      id: 2
      changes:
        - dropTable:
            tableName: carts
'''


@pytest.mark.parametrize(("path", "text", "tool"), [
    ("api/alembic/versions/002_drop_email.py", ALEMBIC, "alembic"),
    ("api/migrations/versions/001.py", ALEMBIC_CREATE, "alembic"),
    ("api/alembic/versions/helpers.py", "def helper():\n    pass\n", None),  # no revision: not a migration
    ("shop/orders/migrations/0002_coupon.py", DJANGO, "django"),
    ("shop/orders/migrations/__init__.py", "", None),
    ("shop/orders/views.py", "migrations.RemoveField(", None),
    ("db/migration/V2__drop_legacy.sql", SQL, "flyway"),
    ("src/main/resources/db/migration/V1_1__init.sql", "CREATE TABLE a (id int);", "flyway"),
    ("db/migration/R__views.sql", "CREATE VIEW v AS SELECT 1;", "flyway"),
    ("db/migration/U2__undo.sql", "DROP TABLE x;", None),  # undo files are not run by migrate
    ("db/changelog/db.changelog-master.xml", LIQUIBASE_XML, "liquibase"),
    ("db/changelog.yaml", LIQUIBASE_YAML, "liquibase"),
    ("db/changes.sql", "--liquibase formatted sql\n--changeset ann:1\nDROP TABLE x;", "liquibase"),
    ("config/settings.yaml", "debug: true", None),
    ("migrations/003_orders.sql", SQL, "sql"),
    ("sql/migrations/003_orders.sql", SQL, "sql"),
    ("reports/monthly.sql", "SELECT 1;", None),  # SQL outside a migration folder
    ("README.md", "DROP TABLE users", None),
])
def test_tool_of(path: str, text: str, tool: str | None) -> None:
    assert tool_of(path, text) == tool


@pytest.mark.parametrize(("path", "text", "tool", "expected"), [
    # Alembic: upgrade() only (downgrade drops by design), a rename and a type change over several lines
    ("v/002.py", ALEMBIC, "alembic", [(11, "drops a column"), (12, "renames"), (16, "changes a column's type")]),
    ("v/001.py", ALEMBIC_CREATE, "alembic", []),
    ("m/0002.py", DJANGO, "django", [(7, "drops a column"), (8, "renames"), (9, "drops a table"), (10, "renames")]),
    ("db/V2__x.sql", SQL, "flyway", [(5, "drops a column"), (6, "renames"), (7, "changes a column's type"),
                                     (8, "empties a table"), (9, "drops a table")]),
    ("c.xml", LIQUIBASE_XML, "liquibase", [(10, "drops a column"), (11, "renames"),
                                           (12, "changes a column's type")]),
    ("c.yaml", LIQUIBASE_YAML, "liquibase", [(13, "drops a table")]),
    ("m/001.sql", "CREATE TABLE t (type text);\nALTER TABLE t ADD COLUMN kind text;\n"
                  "INSERT INTO log (truncate_at) VALUES (1);\n", "sql", []),
    ("m/002.sql", "alter table t modify column age bigint;\nALTER TABLE t RENAME TO t2;\n", "sql",
     [(1, "changes a column's type"), (2, "renames")]),
    ("v/003.py", 'revision = "3"\ndef upgrade():\n    op.execute("DROP TABLE carts")\n'
                 '    # op.drop_table("commented")\n', "alembic", [(3, "drops a table")]),
])
def test_destructive_statements(path: str, text: str, tool: str, expected: list[tuple[int, str]]) -> None:
    found = destructive_statements(path, text, tool)
    assert [(d.line, d.kind) for d in found] == expected
    for d in found:
        assert d.file == path and d.advice == f"{ADVICE[d.kind]} ({EXPAND_CONTRACT})"
        assert "expand/contract" in d.to_dict()["advice"]


def test_an_alembic_file_that_does_not_parse_is_read_whole() -> None:
    text = 'revision = "4"\ndef upgrade(:\n    op.drop_table("x")\n'
    assert [d.line for d in destructive_statements("v/004.py", text, "alembic")] == [3]


def test_a_long_statement_is_shown_cut() -> None:
    text = "DROP TABLE " + "x" * 500 + ";"
    (found,) = destructive_statements("m/9.sql", text, "sql")
    assert len(found.statement) == 160 and found.statement.endswith("…")


def test_files_go_to_the_service_whose_folder_holds_them() -> None:
    services = {"web": ".", "api": "api", "admin": "api/admin"}
    assert owner("api/alembic/versions/1.py", services) == "api"
    assert owner("api/admin/migrations/0001_x.py", services) == "admin"
    assert owner("migrations/1.sql", services) == "web"
    assert owner("apiary/migrations/1.sql", services) == "web"  # a prefix of a name is not its folder
    assert owner("other/migrations/1.sql", {"api": "api"}) is None


def test_find_groups_per_service_in_the_configuration_order_and_names_orphans() -> None:
    changed = {"api/alembic/versions/002.py": ALEMBIC, "api/app.py": "print('hi')",
               "shop/orders/migrations/0002_coupon.py": DJANGO, "tools/migrations/1.sql": "SELECT 1;",
               "docs/notes.md": "DROP TABLE"}
    found, orphans = find(changed, {"shop": "shop", "api": "api"})
    assert [(m.service, m.tool, m.files) for m in found] == [
        ("shop", "django", ["shop/orders/migrations/0002_coupon.py"]),
        ("api", "alembic", ["api/alembic/versions/002.py"])]
    assert len(found[1].destructive) == 3 and orphans == ["tools/migrations/1.sql"]
    assert find({"api/app.py": "x = 1"}, {"api": "api"}) == ([], [])
