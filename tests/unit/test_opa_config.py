"""oslo-opa opa-config: OPA's configuration for polling bundles, and no
secret ever written into it.  (Real OPAs load it in
tests/functional/test_bundle_fleet.py.)"""

from __future__ import annotations

import os
import stat

import pytest
import yaml

from oslo_opa import cli, opa_config

PUBLIC = (
    '-----BEGIN PUBLIC KEY-----\n'
    'MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEexample\n'
    '-----END PUBLIC KEY-----\n'
)
PRIVATE = PUBLIC.replace('PUBLIC', 'PRIVATE')


def run(capsys, *argv):
    code = cli.main(['opa-config', *argv])
    out, err = capsys.readouterr()
    return code, out, err


def base(**kw):
    values = {
        'service_url': 'https://bundles.example.com/',
        'bundles': {'keystone': 'keystone.tar.gz'},
    }
    values.update(kw)
    return opa_config.Options(**values)


def test_polls_persisted_bundles_from_one_service():
    cfg = opa_config.config(
        base(
            bundles=opa_config.parse_bundles(['lib', 'nova=/v1/nova.tgz']),
            min_delay_seconds=10,
            max_delay_seconds=20,
            persistence_directory='/var/lib/opa',
        )
    )
    assert cfg['services'] == {
        'bundles': {'url': 'https://bundles.example.com'}
    }
    assert list(cfg['bundles']) == ['lib', 'nova']
    assert cfg['bundles']['lib'] == {
        'service': 'bundles',
        'resource': 'lib.tar.gz',
        'persist': True,
        'polling': {'min_delay_seconds': 10, 'max_delay_seconds': 20},
    }
    assert cfg['bundles']['nova']['resource'] == '/v1/nova.tgz'
    assert cfg['persistence_directory'] == '/var/lib/opa'
    assert 'keys' not in cfg and 'status' not in cfg
    assert 'decision_logs' not in cfg


def test_a_public_key_is_inlined_with_keyid_and_scope():
    cfg = opa_config.config(
        base(verification_key=PUBLIC, keyid='cloud', scope='write')
    )
    assert cfg['bundles']['keystone']['signing'] == {
        'keyid': 'cloud',
        'scope': 'write',
    }
    assert cfg['keys'] == {'cloud': {'algorithm': 'RS256', 'key': PUBLIC}}
    text = opa_config.dump(cfg)
    # A literal block: the PEM reads as it is in its file.
    assert 'key: |\n      -----BEGIN PUBLIC KEY-----\n' in text
    assert yaml.safe_load(text) == cfg


def test_secrets_are_environment_references_never_values():
    cfg = opa_config.config(
        base(
            verification_key_env='BUNDLE_HMAC',
            algorithm='HS256',
            bearer_token_env='BUNDLE_TOKEN',
        )
    )
    assert cfg['keys']['oslo_opa'] == {
        'algorithm': 'HS256',
        'key': '${BUNDLE_HMAC}',
    }
    assert cfg['services']['bundles']['credentials'] == {
        'bearer': {'token': '${BUNDLE_TOKEN}'}
    }
    text = opa_config.dump(cfg)
    assert yaml.safe_load(text) == cfg
    # The file's comments name no variable OPA would substitute.
    comments = [line for line in text.splitlines() if line.startswith('#')]
    assert comments and not any('${' in line for line in comments)


def test_a_bearer_token_file_is_read_by_opa():
    cfg = opa_config.config(
        base(bearer_token_path='/etc/opa/token', tls_ca_cert='/etc/ca.pem')
    )
    assert cfg['services']['bundles'] == {
        'url': 'https://bundles.example.com',
        'credentials': {'bearer': {'token_path': '/etc/opa/token'}},
        'tls': {'ca_cert': '/etc/ca.pem'},
    }


def test_collectors_are_services_of_their_own():
    cfg = opa_config.config(
        base(
            decision_logs_url='https://logs.example.com/',
            status_url='https://status.example.com',
        )
    )
    assert cfg['services']['decision_logs'] == {
        'url': 'https://logs.example.com'
    }
    assert cfg['decision_logs'] == {'service': 'decision_logs'}
    assert cfg['status'] == {'service': 'status'}


def test_an_oci_registry_is_a_service_of_type_oci():
    cfg = opa_config.config(
        base(
            service_url='http://registry.example.com:5000',
            service_type='oci',
            bundles=opa_config.parse_bundles(
                ['nova=registry.example.com:5000/policies/nova:current']
            ),
        )
    )
    assert cfg['services']['bundles'] == {
        'url': 'http://registry.example.com:5000',
        'type': 'oci',
    }
    assert cfg['bundles']['nova']['resource'] == (
        'registry.example.com:5000/policies/nova:current'
    )


@pytest.mark.parametrize(
    'kw, message',
    [
        ({'verification_key': PRIVATE}, 'is a private key'),
        ({'verification_key': 'hello'}, 'not a PEM public key'),
        (
            {'verification_key': PUBLIC, 'algorithm': 'HS256'},
            'must not be written into a config file',
        ),
        ({'algorithm': 'XS1', 'verification_key_env': 'K'}, 'not one OPA'),
        ({'verification_key_env': 'not-a-var'}, 'not an environment var'),
        ({'bearer_token_env': '$TOKEN'}, 'not an environment var'),
        ({'min_delay_seconds': 0}, 'must be positive'),
        ({'min_delay_seconds': 9, 'max_delay_seconds': 5}, 'at most'),
        ({'service_url': 'ftp://x'}, 'http:// or https://'),
        ({'bundles': {}}, 'at least one bundle'),
        ({'service_type': 'git'}, 'one of oci'),
        ({'service_type': 'oci'}, 'give the image reference'),
    ],
)
def test_unsound_options_are_refused(kw, message):
    with pytest.raises(opa_config.ConfigError, match=message):
        opa_config.config(base(**kw))


@pytest.mark.parametrize('specs', [['a', 'a=x.tgz'], ['a b'], ['=x']])
def test_bundle_names(specs):
    with pytest.raises(opa_config.ConfigError):
        opa_config.parse_bundles(specs)


def test_cli_writes_the_file_atomically_readable_by_opa(capsys, tmp_path):
    key = tmp_path / 'pub.pem'
    key.write_text(PUBLIC)
    out = tmp_path / 'opa.yaml'
    code, stdout, err = run(
        capsys,
        '--service-url',
        'http://127.0.0.1:8080',
        '--bundle',
        'keystone',
        '--verification-key',
        str(key),
        '--bearer-token-env',
        'TOKEN',
        '-o',
        str(out),
    )
    assert code == 0, err
    assert stdout == ''
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o644
    cfg = yaml.safe_load(out.read_text())
    assert cfg['keys']['oslo_opa']['key'] == PUBLIC
    # No temporary file left beside it.
    assert set(os.listdir(tmp_path)) == {'pub.pem', 'opa.yaml'}


def test_cli_usage_errors_exit_2(capsys, tmp_path):
    key = tmp_path / 'key.pem'
    key.write_text(PRIVATE)
    code, out, err = run(
        capsys,
        '--service-url',
        'http://x',
        '--bundle',
        'k',
        '--verification-key',
        str(key),
    )
    assert code == 2 and 'private key' in err and out == ''
    code, _, err = run(
        capsys,
        '--service-url',
        'http://x',
        '--bundle',
        'k',
        '--verification-key',
        str(tmp_path / 'missing.pem'),
    )
    assert code == 2 and '--verification-key' in err
    with pytest.raises(SystemExit) as exc:
        cli.main(
            ['opa-config', '--service-url', 'http://x', '--bundle', 'k']
            + ['--verification-key', str(key), '--verification-key-env', 'K']
        )
    assert exc.value.code == 2


def test_bundles_flag_names_work_too(capsys, tmp_path):
    """--key-id and --signing-alg, as oslo-opa bundle names them."""
    code, out, err = run(
        capsys,
        '--service-url',
        'http://x',
        '--bundle',
        'k',
        '--verification-key-env',
        'SECRET',
        '--signing-alg',
        'HS256',
        '--key-id',
        'cloud-2026',
    )
    assert code == 0, err
    cfg = yaml.safe_load(out)
    assert cfg['keys'] == {
        'cloud-2026': {'algorithm': 'HS256', 'key': '${SECRET}'}
    }
    assert cfg['bundles']['k']['signing'] == {'keyid': 'cloud-2026'}
