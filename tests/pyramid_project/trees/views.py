"""Views that send tasks (seed 001's ``my_view``) and views whose transaction aborts."""

from pyramid.httpexceptions import HTTPConflict
from pyramid.view import view_config

from .models import Customer, Delivery, Note
from .tasks import plain_note, record_note, send_review_sms_notification


def _delivery(request):
    customer = Customer(phone=request.params.get("phone", "+358401234567"))
    delivery = Delivery(customer=customer)
    request.dbsession.add(delivery)
    request.dbsession.flush()
    return delivery


@view_config(route_name="order", renderer="json")
def my_view(request):
    delivery = _delivery(request)
    send_review_sms_notification.apply_async(args=(request, delivery.id,))
    result = plain_note.delay(f"order {delivery.id}")
    hooks = list(request.tm.get().getAfterCommitHooks())
    return {"delivery_id": delivery.id, "plain_task_id": result.id,
            "after_commit_hooks": len(hooks)}


@view_config(route_name="order_aborted", renderer="json")
def aborted_view(request):
    delivery = _delivery(request)
    send_review_sms_notification.apply_async(args=(request, delivery.id,))
    plain_note.delay("aborted order")
    raise HTTPConflict("out of stock")




@view_config(route_name="note_aborted", renderer="json")
def note_aborted(request):
    request.dbsession.add(Note(text="never"))
    record_note.delay("never sent")
    request.tm.doom()
    return {"doomed": True}
