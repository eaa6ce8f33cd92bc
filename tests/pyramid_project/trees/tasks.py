"""Timed tasks (seed 001's examples, with the imports changed)."""
import logging

from celeriac.contrib.pyramid import celery_app as celery
from celeriac.contrib.pyramid import RequestAwareTask, TransactionalTask

from . import models, sms
from .btcaverage import RateConverter

logger = logging.getLogger(__name__)


def uuid_to_slug(value):
    return value.replace("-", "")


@celery.task(name="update_conversion_rates", base=TransactionalTask)
def update_btc_rate(request):
    logger.info("Fetching currency conversion rates from API to Redis")

    # Get a hold of Pyramid registry

    converter = RateConverter(request.dbsession)
    converter.update()


@celery.task(base=TransactionalTask)
def send_review_sms_notification(request, delivery_id):

    dbsession = request.dbsession
    delivery = dbsession.get(models.Delivery, delivery_id)
    customer = delivery.customer

    review_url = request.route_url("review_public", delivery_uuid=uuid_to_slug(delivery.uuid))
    sms.send_templated_sms_to_user(request, customer, "drive/sms/review.txt", locals())


@celery.task(base=TransactionalTask)
def record_and_fail(request, text):
    """Writes a row and sends a task, then fails: neither may survive."""
    request.dbsession.add(models.Note(text=text))
    request.dbsession.flush()
    record_note.delay(text + " (follow-up)")
    raise RuntimeError("the task failed after writing")


@celery.task(base=TransactionalTask)
def record_note(request, text):
    request.dbsession.add(models.Note(text=text))


@celery.task(base=RequestAwareTask)
def describe_request(request):
    """A request-aware task without a transaction: what its request offers."""
    return {"settings": request.registry.settings.get("app.url"),
            "path": request.route_path("review_public", delivery_uuid="x"),
            "url": request.route_url("review_public", delivery_uuid="x"),
            "tm_active": request.tm._txn is not None}


@celery.task
def plain_note(text):
    """A plain task of the app: its publishes from a view wait for the commit too."""
    return text
