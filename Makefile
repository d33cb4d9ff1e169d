# moxtw developer commands. See README.rst.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: venv run test clean

TEST_STAMP := $(VENV)/.installed-test

venv: $(STAMP)

# Editable install in "compat" mode puts the checkout on sys.path, which is
# what Twisted's plugin discovery (twisted/plugins/) needs. `make run` installs only
# what running needs; `make test` adds the test extras.
$(STAMP): setup.cfg pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -e . --config-settings editable_mode=compat
	touch $(STAMP)

$(TEST_STAMP): $(STAMP)
	$(VENV)/bin/pip install -q -e '.[test]' --config-settings editable_mode=compat
	touch $(TEST_STAMP)

run: venv
	$(VENV)/bin/twistd -n --logger=moxtw.log.twistd_observer moxtw localserve $(ARGS)

test: $(TEST_STAMP)
	$(VENV)/bin/python tools/runtests.py $(VENV)/bin/trial $(TESTS)

clean:
	rm -rf $(VENV) _trial_temp* twisted/plugins/dropin.cache *.egg-info
