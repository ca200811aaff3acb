"""The `website:` settings: defaults, and a clear error naming the file, line, field and rule."""

import pytest

from provisioner.config import Config, default_offices, load_config
from provisioner.errors import ConfigError


def test_defaults():
    website = Config(offices=default_offices()).website
    assert (website.keep_releases, website.max_files, website.max_bytes, website.max_ratio,
            website.command_timeout, website.health_timeout, website.shared) == (5, 20000, 512 * 1024 * 1024,
                                                                                  100, 600, 30, [])


@pytest.mark.parametrize("block, line, rule", [
    ("website:\n  keep_releases: 1\n", 2, "website.keep_releases: Input should be greater than or equal to 2"),
    ("website:\n  max_ratio: 0.5\n", 2, "website.max_ratio: Input should be greater than 1"),
    ("website:\n  command_timeout: 0\n", 2, "website.command_timeout: Input should be greater than or equal to 1"),
    ("website:\n  shared: [uploads, ../etc]\n", 2, "'../etc' is not a relative path inside a release"),
    ("website:\n  keep: 3\n", 2, "website.keep: Extra inputs are not permitted"),
])
def test_a_bad_setting_is_refused_with_file_line_field_and_rule(tmp_path, block, line, rule):
    path = tmp_path / "provisioner.yaml"
    path.write_text(block)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value).startswith(f"{path}:{line}: ") and rule in str(err.value)
