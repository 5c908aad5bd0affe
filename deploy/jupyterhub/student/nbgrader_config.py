"""nbgrader settings of a student's server on the course hub (JUPYTER_CONFIG_PATH)."""
import os

c = get_config()  # noqa: F821

c.CourseDirectory.course_id = "transfer-learning"
c.Exchange.root = os.environ.get("NBGRADER_EXCHANGE", "/srv/nbgrader/exchange")
