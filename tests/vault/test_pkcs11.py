"""The PKCS#11 master-key source against a real SoftHSM2 token (tests/softhsm.py): the RFC 7512
reference, the non-extractable AES-256 key it makes, AES-GCM wrapping inside the token, and each
failure as a VaultLocked (exit 10) that names the fix and never the PIN."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO
from softhsm import SO_PIN, TOKEN, USER_PIN, SoftHsm

from byokctl.errors import ExitCode, VaultLocked
from byokctl.vault.pkcs11 import BLOB_VERSION, IV_BYTES, TAG_BYTES, failure, load_module, open_wrapper
from byokctl.vault.pkcs11_uri import parse_reference

MODULE = "/usr/lib/softhsm/libsofthsm2.so"
MASTER = bytes(range(32))
AAD = b"vault:0123 master-key"


def refused(call, *args, **kwargs) -> VaultLocked:
    """The VaultLocked `call` raises, checked to be a message for people with exit code 10."""
    with pytest.raises(VaultLocked) as caught:
        call(*args, **kwargs)
    error = caught.value
    assert error.code == ExitCode.VAULT_LOCKED
    assert error.what and error.fix, error
    assert "Traceback" not in error.message and "\n" not in error.message
    return error


def assert_no_secret(error: Exception, *secrets: str) -> None:
    shown = " ".join([str(error), repr(error), getattr(error, "what", ""), getattr(error, "fix", "") or "",
                      repr(getattr(error, "details", {}))])
    for secret in secrets:
        assert secret not in shown


def token_objects(hsm, obj: str) -> list[dict]:
    """The attributes of the test's objects labelled `obj`, read through python-pkcs11 itself on
    the process's one handle on the module (a second handle would finalize it on the way out).
    Call it with no wrapper open: it logs in itself."""
    import pkcs11
    from pkcs11 import Attribute

    token = load_module(hsm.module).get_token(token_label=TOKEN)
    found = []
    with token.open(user_pin=USER_PIN) as session:
        for item in session.get_objects({Attribute.LABEL: hsm.label(obj)}):
            facts = {name: item[getattr(Attribute, name)] for name in (
                "CLASS", "KEY_TYPE", "VALUE_LEN", "TOKEN", "PRIVATE", "SENSITIVE", "EXTRACTABLE",
                "ALWAYS_SENSITIVE", "NEVER_EXTRACTABLE", "ENCRYPT", "DECRYPT", "WRAP")}
            try:
                item[Attribute.VALUE]
                facts["value_readable"] = True
            except pkcs11.exceptions.AttributeSensitive:
                facts["value_readable"] = False
            found.append(facts)
    return found


def put_key(hsm, obj: str, key_type: str, bits: int) -> None:
    """Another kind of key labelled `obj`, made through python-pkcs11 directly (no wrapper open)."""
    import pkcs11

    token = load_module(hsm.module).get_token(token_label=TOKEN)
    with token.open(rw=True, user_pin=USER_PIN) as session:
        session.generate_key(getattr(pkcs11.KeyType, key_type), bits, label=hsm.label(obj), store=True)


# -- the reference --------------------------------------------------------------------------

@pytest.mark.parametrize(("reference", "canonical"), [
    (f"pkcs11:token=prod;object=byokctl?module-path={MODULE}",
     f"pkcs11:token=prod;object=byokctl;type=secret-key?module-path={MODULE}"),
    # attribute order, case of the scheme and of names, and escapes are the writer's; ours is one
    (f"PKCS11:Object=by%6Bctl;type=secret-key;TOKEN=my%20token?module-path={MODULE}",
     f"pkcs11:token=my%20token;object=bykctl;type=secret-key?module-path={MODULE}"),
    (f"pkcs11:serial=05bf;object=k;id=%01%FF?pin-source=file:/run/pin&module-path={MODULE}",
     f"pkcs11:serial=05bf;object=k;id=%01%FF;type=secret-key?module-path={MODULE}"
     "&pin-source=file:/run/pin"),
    (f"pkcs11:slot-id=7;object=a%3Bb%3Fc?module-path={MODULE}&pin-source=file:///etc/p%20in",
     f"pkcs11:slot-id=7;object=a%3Bb%3Fc;type=secret-key?module-path={MODULE}"
     "&pin-source=file:/etc/p%20in"),
    ("pkcs11:token=t;manufacturer=SoftHSM%20project;model=SoftHSM%20v2;object=o"
     "?module-path=/opt/hsm/lib%20x.so",
     "pkcs11:token=t;manufacturer=SoftHSM%20project;model=SoftHSM%20v2;object=o;type=secret-key"
     "?module-path=/opt/hsm/lib%20x.so"),
])
def test_a_reference_has_one_canonical_spelling_that_parses_back_to_itself(reference, canonical):
    parsed = parse_reference(reference)
    assert parsed.uri == canonical
    assert parse_reference(parsed.uri) == parsed


def test_a_reference_decodes_its_values():
    ref = parse_reference("pkcs11:token=my%20token;object=caf%C3%A9;id=%00%01%ff;slot-id=12"
                          "?module-path=/opt/my%20hsm/p11.so&pin-source=file:/home/me/.pin")
    assert (ref.token, ref.object, ref.id, ref.slot_id) == ("my token", "café", b"\x00\x01\xff", 12)
    assert (ref.module_path, ref.pin_source) == ("/opt/my hsm/p11.so", "/home/me/.pin")


@pytest.mark.parametrize(("reference", "said"), [
    ("", "is not a pkcs11: URI"),
    (f"file:/tmp/x?module-path={MODULE}", "is not a pkcs11: URI"),
    ("pkcs11:", "does not name the PKCS#11 module"),
    ("pkcs11:token=t;object=o", "does not name the PKCS#11 module"),
    ("pkcs11:token=t;object=o?module-path=libsofthsm2.so", "relative path"),
    (f"pkcs11:token=t?module-path={MODULE}", "does not name the key"),
    (f"pkcs11:object=o?module-path={MODULE}", "does not name the token"),
    (f"pkcs11:token=t;object=o;token=u?module-path={MODULE}", "names token= twice"),
    (f"pkcs11:token=t;;object=o?module-path={MODULE}", "not name=value"),
    (f"pkcs11:token=t;object?module-path={MODULE}", "not name=value"),
    (f"pkcs11:token=t;object=o;colour=red?module-path={MODULE}", "unknown attribute 'colour'"),
    (f"pkcs11:token=t;object=o;ev\nil\x1b[2J=1?module-path={MODULE}", "unknown attribute 'ev%0Ail%1B[2j'"),
    (f"pkcs11:token=t;object=o;module-path={MODULE}", "belongs after the '?'"),
    (f"pkcs11:token=t?object=o&module-path={MODULE}", "belongs before the '?'"),
    ("pkcs11:token=t;object=o?module-name=softhsm2", "module-name="),
    (f"pkcs11:token=t;object=o%?module-path={MODULE}", "stray '%'"),
    (f"pkcs11:token=t;object=o%zz?module-path={MODULE}", "stray '%'"),
    (f"pkcs11:token=t;object=o?module-path={MODULE}%00.evil", "control character in module-path="),
    (f"pkcs11:token=t%0Aforged;object=o?module-path={MODULE}", "control character in token="),
    (f"pkcs11:token=%FF%FE;object=o?module-path={MODULE}", "not UTF-8"),
    (f"pkcs11:token={'x' * 33};object=o?module-path={MODULE}", "longer than the 32 bytes"),
    (f"pkcs11:token=t;object=;?module-path={MODULE}", "not name=value"),
    (f"pkcs11:token=t;object=?module-path={MODULE}", "empty object="),
    (f"pkcs11:token=t;object=o;id=?module-path={MODULE}", "empty id="),
    (f"pkcs11:token=t;object=o;type=private?module-path={MODULE}", "type=private"),
    (f"pkcs11:slot-id=-1;object=o?module-path={MODULE}", "slot-id= that is not a number"),
    (f"pkcs11:slot-id=%D9%A3;object=o?module-path={MODULE}", "slot-id= that is not a number"),
    (f"pkcs11:token=t;object=o?module-path={MODULE}&pin-source=|/usr/bin/pinentry", "not a file: URI"),
    (f"pkcs11:token=t;object=o?module-path={MODULE}&pin-source=file:pin.txt", "relative path"),
    (f"pkcs11:token=t;object=o?module-path={MODULE}&pin-source=file://host/pin", "another host"),
])
def test_a_malformed_reference_is_refused_saying_what_to_fix(reference, said):
    error = refused(parse_reference, reference)
    assert said in error.what


@pytest.mark.parametrize("reference", [
    f"pkcs11:token=t;object=o;pin-value=1234-secret?module-path={MODULE}",
    f"pkcs11:token=t;object=o?module-path={MODULE}&pin-value=1234-secret",
    f"pkcs11:token=t;object=o?pin-value=1234%2Dsecret&module-path={MODULE}",
])
def test_a_pin_in_the_reference_is_refused_and_not_repeated(reference):
    error = refused(parse_reference, reference)
    assert "pin-value=" in error.what and "BYOKCTL_PKCS11_PIN" in error.fix
    assert_no_secret(error, "1234-secret", "1234%2Dsecret")


def test_open_wrapper_refuses_a_pin_value_before_touching_any_module(tmp_path):
    error = refused(open_wrapper, "pkcs11:token=t;object=o;pin-value=9999?module-path=/nonexistent.so")
    assert "pin-value=" in error.what
    assert_no_secret(error, "9999")


# -- the key the source makes -------------------------------------------------------------------

def test_create_key_makes_a_non_extractable_sensitive_aes256_token_key(softhsm):
    import pkcs11

    with open_wrapper(softhsm.reference("master-1"), create_key=True) as wrapper:
        blob = wrapper.wrap(MASTER, AAD)
    [key] = token_objects(softhsm, "master-1")
    assert key["CLASS"] == pkcs11.ObjectClass.SECRET_KEY and key["KEY_TYPE"] == pkcs11.KeyType.AES
    assert key["VALUE_LEN"] == 32
    assert key["TOKEN"] and key["PRIVATE"] and key["SENSITIVE"] and not key["EXTRACTABLE"]
    assert key["ALWAYS_SENSITIVE"] and key["NEVER_EXTRACTABLE"]
    assert key["ENCRYPT"] and key["DECRYPT"] and not key["WRAP"]
    assert key["value_readable"] is False
    # a token object: a later open (another session, the module loaded afresh) finds it
    with open_wrapper(softhsm.reference("master-1")) as again:
        assert again.unwrap(blob, AAD) == MASTER


def test_create_key_refuses_to_replace_a_key_of_that_label(softhsm):
    ref = softhsm.reference("master-1")
    with open_wrapper(ref, create_key=True) as wrapper:
        blob = wrapper.wrap(MASTER, AAD)
    error = refused(open_wrapper, ref, create_key=True)
    assert f"already has an object labelled '{softhsm.label('master-1')}'" in error.what
    assert "drop --create-key" in error.fix
    assert len(token_objects(softhsm, "master-1")) == 1
    with open_wrapper(ref) as wrapper:
        assert wrapper.unwrap(blob, AAD) == MASTER


def test_create_key_refuses_a_label_another_kind_of_object_has(softhsm):
    put_key(softhsm, "taken", "GENERIC_SECRET", 256)
    error = refused(open_wrapper, softhsm.reference("taken"), create_key=True)
    assert f"already has an object labelled '{softhsm.label('taken')}'" in error.what


def test_a_key_is_matched_by_its_id_too(softhsm):
    with open_wrapper(softhsm.reference("k", extra=";id=%0A%0B"), create_key=True) as wrapper:
        blob = wrapper.wrap(MASTER, AAD)
    with open_wrapper(softhsm.reference("k", extra=";id=%0A%0B")) as wrapper:
        assert wrapper.unwrap(blob, AAD) == MASTER
    error = refused(open_wrapper, softhsm.reference("k", extra=";id=%0C"))
    assert f"There is no key '{softhsm.label('k')}'" in error.what


def test_the_token_is_found_by_serial_and_by_slot_id(softhsm):
    token = load_module(softhsm.module).get_token(token_label=TOKEN)
    serial, slot = token.serial.decode().strip(), token.slot.slot_id
    with open_wrapper(softhsm.reference("k"), create_key=True) as wrapper:
        blob = wrapper.wrap(MASTER, AAD)
    for path in (f"serial={serial}", f"slot-id={slot}", f"token={TOKEN};slot-id={slot}"):
        ref = f"pkcs11:{path};object={softhsm.label('k')}?module-path={softhsm.module}"
        with open_wrapper(ref) as wrapper:
            assert wrapper.unwrap(blob, AAD) == MASTER
    error = refused(open_wrapper, f"pkcs11:slot-id={slot + 1};object=k?module-path={softhsm.module}")
    assert "not there" in error.what


# -- wrapping -----------------------------------------------------------------------------------

def test_wrap_and_unwrap_round_trip_with_a_fresh_iv_each_time(softhsm):
    with open_wrapper(softhsm.reference(), create_key=True) as wrapper:
        first, second = wrapper.wrap(MASTER, AAD), wrapper.wrap(MASTER, AAD)
        assert wrapper.unwrap(first, AAD) == MASTER and wrapper.unwrap(second, AAD) == MASTER
        assert wrapper.unwrap(wrapper.wrap(b"", b""), b"") == b""
    assert first[0] == BLOB_VERSION and len(first) == 1 + IV_BYTES + len(MASTER) + TAG_BYTES
    assert first[1:1 + IV_BYTES] != second[1:1 + IV_BYTES]
    assert MASTER not in first


@pytest.mark.slow
def test_a_blob_unwraps_in_another_process(softhsm, tmp_path):
    ref = softhsm.reference()
    with open_wrapper(ref, create_key=True) as wrapper:
        blob = wrapper.wrap(MASTER, AAD)
    code = ("import sys; from byokctl.vault.pkcs11 import open_wrapper\n"
            "w = open_wrapper(sys.argv[1]); sys.stdout.write(w.unwrap(bytes.fromhex(sys.argv[2]), "
            "sys.argv[3].encode()).hex()); w.close()")
    done = subprocess.run([sys.executable, "-c", code, ref, blob.hex(), AAD.decode()],
                          capture_output=True, text=True, env=os.environ.copy(), timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == MASTER.hex()


def test_unwrap_refuses_another_aad_and_keeps_working(softhsm):
    with open_wrapper(softhsm.reference(), create_key=True) as wrapper:
        blob = wrapper.wrap(MASTER, AAD)
        for other in (b"vault:9999 master-key", b"", AAD + b"\x00"):
            error = refused(wrapper.unwrap, blob, other)
            assert "does not decrypt" in error.what
        assert wrapper.unwrap(blob, AAD) == MASTER  # the session survives a failed decrypt


@pytest.mark.parametrize("where", ["iv", "ciphertext", "tag"])
def test_unwrap_refuses_a_tampered_blob(softhsm, where):
    with open_wrapper(softhsm.reference(), create_key=True) as wrapper:
        blob = bytearray(wrapper.wrap(MASTER, AAD))
        at = {"iv": 1, "ciphertext": 1 + IV_BYTES + 5, "tag": len(blob) - 1}[where]
        blob[at] ^= 0x01
        error = refused(wrapper.unwrap, bytes(blob), AAD)
        assert "does not decrypt" in error.what and "tampered" in error.what


@pytest.mark.parametrize(("blob", "said"), [
    (b"", "an empty blob"),
    (bytes([BLOB_VERSION]) + b"\x00" * (IV_BYTES + TAG_BYTES - 1), "version 1"),
    (bytes([2]) + b"\x00" * 60, "version 2"),
    (bytes([0]) + b"\x00" * 60, "version 0"),
])
def test_unwrap_refuses_what_is_no_blob_of_this_version(softhsm, blob, said):
    with open_wrapper(softhsm.reference(), create_key=True) as wrapper:
        error = refused(wrapper.unwrap, blob, AAD)
    assert "not a PKCS#11 blob" in error.what and said in error.what


def test_the_blob_is_the_documented_format_with_the_version_byte_authenticated(softhsm):
    """01 || iv || AES-GCM(ciphertext || tag) under GCM AAD 01 || aad, as the token itself
    decrypts it (python-pkcs11 directly): a reader of version 1 needs nothing else."""
    import pkcs11
    from pkcs11.mechanisms import GCMParams

    with open_wrapper(softhsm.reference(), create_key=True) as wrapper:
        blob = wrapper.wrap(MASTER, AAD)
    iv, body = blob[1:1 + IV_BYTES], blob[1 + IV_BYTES:]
    token = load_module(softhsm.module).get_token(token_label=TOKEN)
    with token.open(user_pin=USER_PIN) as session:
        key = session.get_key(label=softhsm.label())
        assert key.decrypt(body, mechanism=pkcs11.Mechanism.AES_GCM,
                           mechanism_param=GCMParams(iv, bytes([BLOB_VERSION]) + AAD)) == MASTER
        with pytest.raises(pkcs11.exceptions.PKCS11Error):  # the version byte is in the AAD
            key.decrypt(body, mechanism=pkcs11.Mechanism.AES_GCM, mechanism_param=GCMParams(iv, AAD))


def test_another_key_does_not_unwrap_the_blob(softhsm):
    with open_wrapper(softhsm.reference("one"), create_key=True) as one:
        blob = one.wrap(MASTER, AAD)
        with open_wrapper(softhsm.reference("two"), create_key=True) as two:
            error = refused(two.unwrap, blob, AAD)
            assert f"'{softhsm.label('two')}'" in error.what and "does not decrypt" in error.what
            assert two.unwrap(two.wrap(MASTER, AAD), AAD) == MASTER
        # closing one wrapper on the token logs nobody out: the other keeps working
        assert one.unwrap(blob, AAD) == MASTER


def test_a_closed_wrapper_refuses_work_and_still_describes_itself(softhsm):
    wrapper = open_wrapper(softhsm.reference(), create_key=True)
    wrapper.close()
    wrapper.close()
    error = refused(wrapper.wrap, MASTER, AAD)
    assert "closed" in error.what
    assert softhsm.label() in wrapper.describe()


def test_reference_repr_and_describe_name_the_key_and_never_the_pin(softhsm, tmp_path):
    pin_file = tmp_path / "pin"
    pin_file.write_text(USER_PIN + "\n")
    pin_file.chmod(0o600)
    for query, source in (("", "PIN from $BYOKCTL_PKCS11_PIN"), (f"&pin-source=file:{pin_file}",
                                                                  f"PIN from file {pin_file}")):
        ref = softhsm.reference("desc", query=query)
        with open_wrapper(ref, create_key=not query) as wrapper:
            assert wrapper.reference == parse_reference(ref).uri
            described = wrapper.describe()
            shown = " ".join([wrapper.reference, repr(wrapper), described, str(wrapper)])
        assert f"'{softhsm.label('desc')}' (AES-256, non-extractable)" in described
        assert f"token '{TOKEN}'" in described
        assert softhsm.module in described and source in described
        assert USER_PIN not in shown and SO_PIN not in shown


# -- failures -----------------------------------------------------------------------------------

def test_a_missing_module_is_named_with_how_to_install_one(softhsm):
    error = refused(open_wrapper, softhsm.reference(module="/usr/lib/nonexistent/libhsm.so"))
    assert "/usr/lib/nonexistent/libhsm.so is not there" in error.what
    assert "module-path=" in error.fix


def test_a_module_that_is_not_a_pkcs11_library_is_refused(softhsm, tmp_path):
    junk = tmp_path / "libjunk.so"
    junk.write_bytes(b"\x7fELF not really")
    junk.chmod(0o600)
    error = refused(open_wrapper, softhsm.reference(module=str(junk)))
    assert "could not be loaded" in error.what
    libz = next((p for p in ("/usr/lib/x86_64-linux-gnu/libz.so.1", "/lib/x86_64-linux-gnu/libz.so.1",
                             "/usr/lib/aarch64-linux-gnu/libz.so.1") if os.path.isfile(p)), None)
    if libz:  # a real shared library without C_GetFunctionList
        error = refused(open_wrapper, softhsm.reference(module=libz))
        assert "could not be loaded" in error.what and "C_GetFunctionList" in error.what


def test_a_module_others_could_rewrite_is_not_loaded(softhsm, tmp_path):
    writable = tmp_path / "libsofthsm2.so"
    writable.write_bytes(Path(softhsm.module).read_bytes())
    writable.chmod(0o666)
    error = refused(open_wrapper, softhsm.reference(module=str(writable)))
    assert "could be rewritten by another user" in error.what and "chmod go-w" in error.fix
    error = refused(open_wrapper, softhsm.reference(module=str(tmp_path)))
    assert "is not a file" in error.what


def test_an_absent_token_is_named(softhsm):
    error = refused(open_wrapper, softhsm.reference(token="other-token"))
    assert "token 'other-token'" in error.what and "not there" in error.what
    assert "SOFTHSM2_CONF" in error.fix or "plug in" in error.fix


@pytest.mark.slow
def test_a_token_deleted_after_the_key_was_made_is_absent(softhsm_session, tmp_path):
    """In processes of their own, on a SoftHSM2 of the test's own: SoftHSM2 reads its tokens once
    per process, so a token deleted under this one would go unseen by it."""
    hsm = SoftHsm(tmp_path / "own")
    hsm.init_token()
    env = {**os.environ, **hsm.env, "BYOKCTL_PKCS11_PIN": USER_PIN, "PYTHONPATH": str(REPO)}
    first = run_open(hsm.reference(), env, create=True)
    assert first.returncode == 0, first.stdout + first.stderr
    hsm.delete_token()
    second = run_open(hsm.reference(), env)
    assert second.returncode == 10, second.stdout + second.stderr
    assert f"no token '{TOKEN}'" in second.stdout and "not there" in second.stdout


OPEN = ("import sys; from byokctl.errors import VaultLocked\n"
        "from byokctl.vault.pkcs11 import open_wrapper\n"
        "try:\n    open_wrapper(sys.argv[1], create_key=sys.argv[2] == '1').close()\n"
        "except VaultLocked as e:\n    print(e.message); sys.exit(int(e.code))\n")


def run_open(reference: str, env: dict[str, str], *, create: bool = False) -> subprocess.CompletedProcess:
    """open_wrapper (and close) in a process of its own: exit 0, or the error's code and message."""
    return subprocess.run([sys.executable, "-c", OPEN, reference, "1" if create else "0"], env=env,
                          capture_output=True, text=True, timeout=60)


def test_a_wrong_pin_is_refused_without_repeating_it(softhsm, monkeypatch):
    monkeypatch.setenv("BYOKCTL_PKCS11_PIN", "0000-wrong")
    error = refused(open_wrapper, softhsm.reference(), create_key=True)
    assert f"The PIN for the HSM's token '{TOKEN}' is wrong" in error.what
    assert "BYOKCTL_PKCS11_PIN" in error.fix
    assert_no_secret(error, "0000-wrong", USER_PIN)
    assert error.__cause__ is None and error.__suppress_context__


def test_no_pin_at_all_says_where_to_put_one(softhsm, monkeypatch):
    monkeypatch.delenv("BYOKCTL_PKCS11_PIN")
    error = refused(open_wrapper, softhsm.reference(), create_key=True)
    assert "No PIN" in error.what
    assert "BYOKCTL_PKCS11_PIN" in error.fix and "pin-source=file:" in error.fix


def test_a_locked_pin_names_the_security_officer():
    """What the source says to CKR_PIN_LOCKED from C_Login, as python-pkcs11 raises it (PinLocked).
    SoftHSM2 never answers C_Login so: its Token::loginUser answers every wrong PIN with
    CKR_PIN_INCORRECT and never locks, so no real token here can."""
    pkcs11 = pytest.importorskip("pkcs11", reason="python-pkcs11 is not installed")
    ref = parse_reference(f"pkcs11:token=prod;object=k?module-path={MODULE}")
    error = failure(pkcs11.exceptions.PinLocked(), ref, "refused the login")
    assert isinstance(error, VaultLocked) and error.code == ExitCode.VAULT_LOCKED
    assert "token 'prod' is locked after too many wrong tries" in error.what
    assert "security officer" in error.fix


@pytest.mark.slow
def test_a_token_that_reports_its_pin_locked_is_not_tried(softhsm_session, tmp_path):
    """A real SoftHSM2 token whose CK_TOKEN_INFO says CKF_USER_PIN_LOCKED (set in its file, as
    SoftHSM2 never sets it itself): refused before any login, with the right PIN at hand."""
    import pkcs11

    hsm = SoftHsm(tmp_path / "own")
    hsm.init_token()
    env = {**os.environ, **hsm.env, "BYOKCTL_PKCS11_PIN": USER_PIN, "PYTHONPATH": str(REPO)}
    assert run_open(hsm.reference(), env, create=True).returncode == 0
    hsm.set_token_flags(pkcs11.TokenFlag.USER_PIN_LOCKED)
    locked = run_open(hsm.reference(), env)
    assert locked.returncode == 10, locked.stdout + locked.stderr
    assert f"The user PIN of the HSM's token '{TOKEN}' is locked" in locked.stdout
    assert "security officer" in locked.stdout and USER_PIN not in locked.stdout + locked.stderr


def test_a_missing_key_names_create_key_and_restoring_it(softhsm):
    error = refused(open_wrapper, softhsm.reference("never-made"))
    assert f"There is no key '{softhsm.label('never-made')}' on the HSM's token '{TOKEN}'" in error.what
    assert "--create-key" in error.fix and "restore the key" in error.fix


@pytest.mark.parametrize(("key_type", "bits", "said"), [
    ("AES", 128, "is an AES-128 key"),
    ("GENERIC_SECRET", 256, "is a GENERIC_SECRET secret key"),
])
def test_a_key_of_the_wrong_type_is_refused(softhsm, key_type, bits, said):
    put_key(softhsm, "odd", key_type, bits)
    error = refused(open_wrapper, softhsm.reference("odd"))
    assert said in error.what and "not an AES-256 secret key" in error.what


def test_two_objects_of_one_label_ask_for_an_id(softhsm):
    put_key(softhsm, "twice", "AES", 256)
    put_key(softhsm, "twice", "AES", 256)
    error = refused(open_wrapper, softhsm.reference("twice"))
    assert "Several objects" in error.what and "id=" in error.fix


# -- the PIN file -------------------------------------------------------------------------------

def test_a_private_pin_file_is_used_before_the_env_var(softhsm, tmp_path, monkeypatch):
    pin_file = tmp_path / "pin"
    pin_file.write_text(USER_PIN + "\n")
    pin_file.chmod(0o600)
    monkeypatch.setenv("BYOKCTL_PKCS11_PIN", "0000-wrong")
    with open_wrapper(softhsm.reference(query=f"&pin-source=file:{pin_file}"), create_key=True) as w:
        assert w.unwrap(w.wrap(MASTER, AAD), AAD) == MASTER
    monkeypatch.delenv("BYOKCTL_PKCS11_PIN")
    with open_wrapper(softhsm.reference(query=f"&pin-source=file://{pin_file}")) as w:
        assert w.unwrap(w.wrap(MASTER, AAD), AAD) == MASTER


def test_a_pin_file_others_can_read_is_refused(softhsm, tmp_path):
    pin_file = tmp_path / "pin"
    pin_file.write_text(USER_PIN)
    pin_file.chmod(0o644)
    error = refused(open_wrapper, softhsm.reference(query=f"&pin-source=file:{pin_file}"))
    assert "open to other users" in error.what and "chmod 600" in error.fix
    assert_no_secret(error, USER_PIN)


def test_a_pin_file_that_is_a_symlink_is_refused(softhsm, tmp_path):
    target = tmp_path / "real-pin"
    target.write_text(USER_PIN)
    target.chmod(0o600)
    (tmp_path / "pin").symlink_to(target)
    error = refused(open_wrapper, softhsm.reference(query=f"&pin-source=file:{tmp_path / 'pin'}"))
    assert "symbolic link" in error.what


@pytest.mark.parametrize(("content", "said"), [
    (None, "could not be read"),
    (b"", "does not hold one PIN"),
    (b"\n", "does not hold one PIN"),
    (b"1234\n5678\n", "does not hold one PIN"),
])
def test_a_pin_file_missing_or_without_one_pin_is_refused(softhsm, tmp_path, content, said):
    pin_file = tmp_path / "pin"
    if content is not None:
        pin_file.write_bytes(content)
        pin_file.chmod(0o600)
    error = refused(open_wrapper, softhsm.reference(query=f"&pin-source=file:{pin_file}"))
    assert said in error.what
    assert_no_secret(error, "1234", "5678")


def test_a_wrong_pin_in_a_file_is_refused_without_repeating_it(softhsm, tmp_path):
    pin_file = tmp_path / "pin"
    pin_file.write_text("0000-wrong\n")
    pin_file.chmod(0o600)
    error = refused(open_wrapper, softhsm.reference(query=f"&pin-source=file:{pin_file}"))
    assert "is wrong" in error.what
    assert_no_secret(error, "0000-wrong", USER_PIN)


# -- no start-up cost for everyone else --------------------------------------------------------

@pytest.mark.parametrize("module", ["byokctl.vault.master", "byokctl.vault.pkcs11", "byokctl.cli"])
def test_importing_byokctl_does_not_import_python_pkcs11(module):
    code = f"import sys, {module}; print('pkcs11' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


@pytest.mark.slow
def test_the_hsm_benchmark_times_each_part(softhsm_session):
    """benchmarks/hsm.py end to end, once, on a token of its own."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_hsm", REPO / "benchmarks" / "hsm.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rows = bench.measure(runs=1, module=softhsm_session.module)
    assert [row["name"].split()[0] for row in rows] == ["import", "open_wrapper", "unwrap", "whole"]
    assert all(0 < row["seconds"] < 60 for row in rows)
