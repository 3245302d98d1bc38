"""Offline lm-eval task suites (``ss_arith``, ``ss_mc``, ``ss_code``, ``ss_ifeval``): YAMLs, local data, hooks.

Load them with ``lm_eval.tasks.TaskManager(include_path=<this dir>)``; see :mod:`tasks.evaluation.benchmarks` for
the registry entries and :mod:`tasks.evaluation.suites.build_data` for how the JSONL files are generated.
"""
