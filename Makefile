# moxtw developer commands. See README.rst.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: venv run test clean

venv: $(STAMP)

# Editable install in "compat" mode puts the checkout on sys.path, which is
# what Twisted's plugin discovery (twisted/plugins/) needs.
$(STAMP): setup.cfg pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip setuptools wheel
	$(VENV)/bin/pip install -q -e '.[test]' --config-settings editable_mode=compat
	touch $(STAMP)

run: venv
	$(VENV)/bin/twistd -n --logger=moxtw.log.twistd_observer moxtw localserve $(ARGS)

test: venv
	$(VENV)/bin/python tools/runtests.py $(VENV)/bin/trial $(TESTS)

clean:
	rm -rf $(VENV) _trial_temp* twisted/plugins/dropin.cache *.egg-info
