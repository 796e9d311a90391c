"""nbgrader configuration for the gmcourse assignments.

The course root is this repository:

* ``solutions/<assignment>/<assignment>.ipynb``: instructor sources (solutions, hidden tests);
* ``exercises/<assignment>/``: the student versions, generated from the sources with
  ``nbgrader generate_assignment <assignment> --force --no-db`` (``make exercises``), never edited
  by hand;
* ``_grading/``: everything grading produces (gradebook, submitted/, autograded/, feedback/, CSV).
  It is ignored by git. ``python -m gmcourse.grading`` (``make grade``) builds a separate course
  directory per assignment under it and loads *this* file for every behavioural setting, so
  plain ``nbgrader`` commands and the pipeline grade identically.
"""

import os

c = get_config()  # noqa: F821 (injected by traitlets)

COURSE_ROOT = os.path.dirname(os.path.abspath(__file__))
GRADING_DIR = os.path.join(COURSE_ROOT, "_grading")

c.CourseDirectory.course_id = "gmcourse"
c.CourseDirectory.root = COURSE_ROOT
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "exercises"
c.CourseDirectory.submitted_directory = "_grading/submitted"
c.CourseDirectory.autograded_directory = "_grading/autograded"
c.CourseDirectory.feedback_directory = "_grading/feedback"
c.CourseDirectory.solution_directory = "_grading/solution"
c.CourseDirectory.db_url = "sqlite:///" + os.path.join(GRADING_DIR, "gradebook.db")
# editor/OS debris that must never reach students or the grader
c.CourseDirectory.ignore = [".ipynb_checkpoints", "*.pyc", "__pycache__", "feedback", ".DS_Store"]

# Every cell must finish well inside nbgrader's default per-cell limit; stated here so
# that nobody raises it to hide a slow notebook.
c.Execute.timeout = 30
# Stop each kernel as soon as its notebook is done (saves about a second per submission),
# and keep ipykernel's start-up notices off the grader's terminal.
c.Execute.shutdown_kernel = "immediate"
c.Execute.extra_arguments = ["--IPKernelApp.log_level=ERROR"]

# A student who deletes a test cell gets it back (it then runs and scores as usual);
# edited test cells and changed points are always restored from the gradebook.
c.OverwriteCells.add_missing_cells = True

# The gradebook is an SQLite file under _grading/, which SQLite will not create itself.
os.makedirs(GRADING_DIR, exist_ok=True)
