import json


def test_create_list_show(cli, vault):
    r = cli("org", "create", "acme", "--name", "Acme Inc", "--plan", "growth", "--credits", "50")
    assert r.exit_code == 0, r.output
    assert "Created org acme" in r.stdout
    r = cli("org", "list", "--json")
    assert [o["slug"] for o in json.loads(r.stdout)] == ["acme"]
    shown = json.loads(cli("org", "show", "acme", "--json").stdout)
    for field in ("slug", "name", "plan", "credits", "provider", "model", "base_url", "fallback",
                  "effective_mode", "grace_until", "budget_monthly_usd"):
        assert field in shown
    assert shown["name"] == "Acme Inc" and shown["credits"] == 50 and shown["provider"] == "platform"


def test_create_twice_conflicts_unless_if_not_exists(cli, vault):
    assert cli("org", "create", "acme").exit_code == 0
    r = cli("org", "create", "acme")
    assert r.exit_code == 12 and "already exists" in r.stderr
    r = cli("org", "create", "acme", "--if-not-exists", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["created"] is False


def test_if_not_exists_with_the_same_options_succeeds_unchanged(cli, vault):
    r = cli("org", "create", "acme", "--name", "Acme Inc", "--plan", "growth", "--credits", "50")
    assert r.exit_code == 0, r.output
    assert cli("credits", "add", "acme", "25").exit_code == 0  # the balance moves on; the start does not
    for args in ([], ["--plan", "growth"], ["--name", "Acme Inc", "--plan", "growth", "--credits", "50"]):
        r = cli("org", "create", "acme", *args, "--if-not-exists")
        assert r.exit_code == 0, (args, r.output)
        assert "already exists; left unchanged" in r.stdout
    shown = json.loads(cli("org", "show", "acme", "--json").stdout)
    assert (shown["plan"], shown["credits"]) == ("growth", 75)


def test_if_not_exists_with_other_options_names_each_difference(cli, vault):
    assert cli("org", "create", "acme", "--plan", "starter", "--credits", "10").exit_code == 0
    r = cli("org", "create", "acme", "--name", "Acme", "--plan", "growth", "--credits", "500",
            "--if-not-exists")
    assert r.exit_code == 12, r.output
    assert r.stdout == ""
    assert "name is 'acme', not 'Acme'" in r.stderr
    assert "plan is starter, not growth" in r.stderr
    assert "started with 10 credits, not 500" in r.stderr
    assert "byokctl plan set acme growth" in r.stderr and "byokctl credits add acme" in r.stderr
    r = cli("org", "create", "acme", "--plan", "growth", "--if-not-exists", "--json")
    assert r.exit_code == 12, r.output
    error = json.loads(r.stderr)["error"]
    assert error["code"] == "conflict"
    assert error["details"]["differences"] == ["plan is starter, not growth"]
    shown = json.loads(cli("org", "show", "acme", "--json").stdout)
    assert (shown["name"], shown["plan"], shown["credits"]) == ("acme", "starter", 10)  # untouched


def test_set_provider_gate_alias_and_audit(cli, vault):
    cli("org", "create", "small", "--plan", "starter")
    r = cli("org", "set-provider", "small", "anthropic", "--yes")
    assert r.exit_code == 5, r.output
    cli("org", "create", "big", "--plan", "growth")
    r = cli("org", "set-provider", "big", "anthropic", "--model", "haiku", "--yes", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["after"]["model"] == "claude-haiku-5-5"


def test_set_provider_needs_confirmation_without_tty(cli, vault):
    cli("org", "create", "big", "--plan", "growth")
    r = cli("org", "set-provider", "big", "openai")
    assert r.exit_code == 12 and "--yes" in r.stderr
    assert json.loads(cli("org", "show", "big", "--json").stdout)["provider"] == "platform"


def test_errors_are_json_with_json(cli, vault):
    r = cli("org", "show", "nope", "--json")
    assert r.exit_code == 3
    assert json.loads(r.stderr)["error"]["code"] == "not-found"
    assert "Traceback" not in r.output


def test_piped_tables_keep_one_row_per_line(cli, vault):
    long_name = "A very long organisation name " * 4
    cli("org", "create", "acme-international-holdings", "--name", long_name.strip())
    r = cli("org", "list")
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["slug", "name", "plan", "credits", "provider", "model"]
    assert len(lines) == 2 and lines[1].startswith("acme-international-holdings  ")
    assert long_name.strip() in lines[1] and "│" not in r.stdout
