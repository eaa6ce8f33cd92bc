"""Seed 001's site, reduced to what its task examples use: Pyramid, pyramid_tm, SQLAlchemy
on SQLite joined to the transaction by zope.sqlalchemy, and celeriac.contrib.pyramid."""

from pyramid.config import Configurator


def main(global_config, **settings):
    with Configurator(settings=settings) as config:
        config.include("pyramid_tm")
        config.include(".models")
        config.include("celeriac.contrib.pyramid")
        config.configure_celery(global_config["__file__"])
        config.add_route("order", "/order")
        config.add_route("order_aborted", "/order-aborted")
        config.add_route("note_aborted", "/note-aborted")
        config.add_route("review_public", "/review/{delivery_uuid}")
        config.scan(".views")
    return config.make_wsgi_app()
