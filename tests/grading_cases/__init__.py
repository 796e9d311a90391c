"""Classic wrong answers for each nbgrader assignment, and the exact score each must get.

One module per assignment, named after it (``A1_max_likelihood.py``), defining::

    ASSIGNMENT = "A1_max_likelihood"       # folder in solutions/ and exercises/
    NOTEBOOK = "A1_max_likelihood.ipynb"   # the notebook students submit
    MAX_SCORE = 24.0                       # total points of the notebook
    WRONG_ANSWERS = {                      # name -> (edits, expected total score)
        "entropy_without_zero_log_zero": ({"entropy": "def entropy(p):\\n    ...\\n"}, 23.0),
    }

``edits`` maps the nbgrader ``grade_id`` of a *solution* cell to the full new source of that
cell: a plausible wrong answer. Every other solution cell holds the instructor's solution.
``tests/test_grading.py`` picks up every module here, grades all of them in one run of
``python -m gmcourse.grading`` per assignment, and asserts each score exactly.
"""
