"""The HTTP edge every function shares: the function app, auth, problems, handlers."""

from mastery.web.app import Context, FunctionApp, json_response, read_body
from mastery.web.audit import recent_audit
from mastery.web.auth import Authenticator, Principal, Role, authorize_student
from mastery.web.batch import batch_event, batch_status, submit_batch
from mastery.web.compare import compare_cohort
from mastery.web.events import event_handler, record_from_http
from mastery.web.gdpr import erase_student, export_student
from mastery.web.history import mastery_history_report
from mastery.web.prediction import predict_next_week
from mastery.web.problems import PROBLEM_JSON, Problem
from mastery.web.process import process_intent
from mastery.web.query import query_mastery
from mastery.web.recommendations import recommend_adaptive

__all__ = [
    "PROBLEM_JSON",
    "Authenticator",
    "Context",
    "FunctionApp",
    "Principal",
    "Problem",
    "Role",
    "authorize_student",
    "batch_event",
    "batch_status",
    "compare_cohort",
    "erase_student",
    "event_handler",
    "export_student",
    "json_response",
    "mastery_history_report",
    "predict_next_week",
    "process_intent",
    "query_mastery",
    "read_body",
    "recent_audit",
    "recommend_adaptive",
    "record_from_http",
    "submit_batch",
]
