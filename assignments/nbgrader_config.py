"""nbgrader configuration of the transfer-learning course.

nbgrader reads this file from the directory it is started in, so run every nbgrader
command from ``assignments/`` (``cd assignments && nbgrader generate_assignment a1_learning_curves``).
Paths are resolved from this file, not from the working directory, so a copy of the
course directory (the tests grade in a temporary copy) is self-contained.

Environment overrides, for a shared JupyterHub installation:
  NBGRADER_DB_URL      gradebook database (default: sqlite file gradebook.db next to this file)
  NBGRADER_EXCHANGE    exchange directory for release/fetch/submit/collect
                       (default: /srv/nbgrader/exchange, nbgrader's own default)
  NBGRADER_CELL_TIMEOUT  seconds a single cell may run while grading (default 120)
"""
import os

c = get_config()  # noqa: F821  (provided by traitlets when it loads this file)

HERE = os.path.dirname(os.path.abspath(__file__))

c.CourseDirectory.course_id = "transfer-learning"
c.CourseDirectory.root = HERE
c.CourseDirectory.db_url = os.environ.get(
    "NBGRADER_DB_URL", "sqlite:///" + os.path.join(HERE, "gradebook.db"))

c.Exchange.root = os.environ.get("NBGRADER_EXCHANGE", "/srv/nbgrader/exchange")

# Every notebook grades in well under a minute on a laptop CPU; a cell that takes two minutes
# is a student's runaway loop, not honest work. The notebooks shrink their training when
# nbgrader sets NBGRADER_EXECUTION (autograde / validate).
c.Execute.timeout = int(os.environ.get("NBGRADER_CELL_TIMEOUT", "120"))
c.Execute.interrupt_on_timeout = True

c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"
c.ClearSolutions.enforce_metadata = True
