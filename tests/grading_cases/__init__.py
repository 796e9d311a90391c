"""Classic wrong answers for each nbgrader assignment, and the exact score each must get.

One module per assignment, named after it (``A1_max_likelihood.py``), defining::

    ASSIGNMENT = "A1_max_likelihood"       # folder in solutions/ and exercises/
    NOTEBOOK = "A1_max_likelihood.ipynb"   # the notebook students submit
    MAX_SCORE = 24.0                       # total points of the notebook
    WRONG_ANSWERS = {                      # name -> (edits, expected total score)
        "entropy_without_zero_log_zero": ({"entropy": "def entropy(p):\\n    ...\\n"}, 23.0),
    }
    CORRECT_ANSWERS = {                    # optional: name -> edits that must get MAX_SCORE
        "entropy_via_torch_distributions": {"entropy": "def entropy(p):\\n    ...\\n"},
    }

``edits`` maps the nbgrader ``grade_id`` of a *solution* cell to the full new source of that
cell: a plausible wrong answer (or, in CORRECT_ANSWERS, a correct one that differs from the
instructor's: another valid convention, a slow but correct loop). Every other solution cell holds
the instructor's solution.
``tests/test_grading.py`` picks up every module here, grades all of them in one run of
``python -m gmcourse.grading`` per assignment, and asserts each score exactly.
"""
