"""nbgrader settings of an instructor's server on the course hub (JUPYTER_CONFIG_PATH).

The formgrader and the nbgrader commands work on ~/transfer-learning, the instructor's copy
of the repository's assignments/ (made by 'course classroom add-instructor'); that folder's
own nbgrader_config.py (course id, gradebook, cell time limit) is loaded too.
"""
import os

c = get_config()  # noqa: F821

COURSE = os.path.join(os.path.expanduser("~"), os.environ.get("COURSE_DIRNAME", "transfer-learning"))
if os.path.exists(os.path.join(COURSE, "nbgrader_config.py")):
    load_subconfig(os.path.join(COURSE, "nbgrader_config.py"))  # noqa: F821
c.CourseDirectory.root = COURSE
c.CourseDirectory.course_id = "transfer-learning"
c.Exchange.root = os.environ.get("NBGRADER_EXCHANGE", "/srv/nbgrader/exchange")
