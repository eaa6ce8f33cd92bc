"""Stand-in for Websauna's SMS sender: the message is a row, in the task's transaction."""

from .models import SentSMS

TEMPLATES = {"drive/sms/review.txt": "Thanks for your order! Review it: {review_url}"}


def send_templated_sms_to_user(request, user, template, context):
    body = TEMPLATES[template].format(**context)
    request.dbsession.add(SentSMS(to=user.phone, body=body))
